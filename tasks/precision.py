"""dtype, quantization and device for `from_pretrained`, checked before any weight is read.

Quantization (bitsandbytes 8-bit / 4-bit) needs CUDA: asking for it on a machine without a GPU is
a `SetupError` at worker start, with the reason, not a crash in the middle of a job.
"""

from __future__ import annotations

from typing import Any

import torch

from vlmq.registry import ModelSpec
from vlmq.tasks.adapters.base import SetupError

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(spec: ModelSpec) -> str:
    if spec.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec.device.startswith("cuda") and not torch.cuda.is_available():
        raise SetupError(f"model {spec.name}: device {spec.device!r} asked for, but CUDA is not available")
    return spec.device


def resolve_dtype(spec: ModelSpec, device: str) -> torch.dtype:
    if spec.dtype == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return _DTYPES[spec.dtype]


def load_kwargs(spec: ModelSpec) -> dict[str, Any]:
    device = resolve_device(spec)
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(spec, device)}
    if spec.revision:
        kwargs["revision"] = spec.revision
    if spec.quantization:
        if not device.startswith("cuda"):
            raise SetupError(
                f"model {spec.name}: quantization={spec.quantization!r} needs a CUDA GPU (bitsandbytes); "
                f"this worker has device {device!r}. Remove quantization or run the worker on a GPU host."
            )
        try:
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig
        except ImportError as exc:
            raise SetupError(f"model {spec.name}: quantization needs bitsandbytes (pip install 'vlmq[gpu]')") from exc
        if spec.quantization == "8bit":
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        else:
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_compute_dtype=kwargs["dtype"], bnb_4bit_quant_type="nf4"
            )
        kwargs["device_map"] = {"": device if ":" in device else f"{device}:0"}
    else:
        kwargs["device_map"] = {"": device}
    return kwargs
