"""Offline demo models: tiny real-architecture models with random weights (see `build`)."""

from vlmq.tasks.demo.build import (
    BUILD_VERSION,
    DEMO_MODELS,
    build_demo_model,
    build_demo_models,
    demo_model_dirs,
    is_built,
)

__all__ = [
    "BUILD_VERSION",
    "DEMO_MODELS",
    "build_demo_model",
    "build_demo_models",
    "demo_model_dirs",
    "is_built",
]
