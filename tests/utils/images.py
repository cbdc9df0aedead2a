"""Test images: real photos from scikit-image, and encodings of them."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image
from skimage import data


def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())


def cat() -> Image.Image:
    return Image.fromarray(data.chelsea())


def coffee() -> Image.Image:
    return Image.fromarray(data.coffee())


def noise(seed: int, size: int = 64) -> Image.Image:
    """A random image: a different one per seed (so no cache tier ever answers it)."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def encode(image: Image.Image, fmt: str = "PNG", **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def data_uri(image: Image.Image | bytes, mime: str = "image/png") -> str:
    raw = image if isinstance(image, bytes) else encode(image)
    return f"data:{mime};base64," + base64.b64encode(raw).decode()
