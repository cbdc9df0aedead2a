"""Fixtures for the adapter tests: the demo models, built once per session, and real photos."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image
from skimage import data

from vlmq.registry import ModelSpec
from vlmq.tasks.adapters import load_adapter_class
from vlmq.tasks.adapters.base import ModelAdapter

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def demo_models(data_dir: Path) -> Path:
    """The session's demo models (built once by the top-level `data_dir` fixture)."""
    return data_dir / "demo-models"


@pytest.fixture(scope="session")
def photos() -> list[Image.Image]:
    """Three real photos of different sizes: astronaut 512x512, chelsea 451x300, coffee 600x400."""
    return [
        Image.fromarray(data.astronaut()),
        Image.fromarray(data.chelsea()),
        Image.fromarray(data.coffee()),
    ]


@pytest.fixture(scope="session")
def make_adapter(demo_models: Path) -> Callable[..., ModelAdapter]:
    """`make(adapter, model, tasks, **spec)`: an adapter set up on a demo model (or "opencv").

    Adapters without extra spec fields are cached for the session (setup once per model).
    """
    cache: dict[tuple[str, str], ModelAdapter] = {}

    def make(adapter: str, model: str, tasks: list[str], **spec: object) -> ModelAdapter:
        source = model if model == "opencv" else str(demo_models / model)
        key = (adapter, source)
        if spec or key not in cache:
            model_spec = ModelSpec(name="test-model", adapter=adapter, source=source, tasks=tasks, **spec)
            instance = load_adapter_class(adapter)(model_spec, source)
            instance.setup()
            if spec:
                return instance
            cache[key] = instance
        return cache[key]

    return make
