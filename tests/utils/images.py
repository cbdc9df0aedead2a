"""Test images: real photos from scikit-image, and encodings of them."""

from __future__ import annotations

import base64
import io

from PIL import Image
from skimage import data


def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())


def cat() -> Image.Image:
    return Image.fromarray(data.chelsea())


def coffee() -> Image.Image:
    return Image.fromarray(data.coffee())


def encode(image: Image.Image, fmt: str = "PNG", **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def data_uri(image: Image.Image | bytes, mime: str = "image/png") -> str:
    raw = image if isinstance(image, bytes) else encode(image)
    return f"data:{mime};base64," + base64.b64encode(raw).decode()
