"""Image intake: decode and check bytes, normalise to RGB, and key them by content.

The API runs `decode_image` on every upload, data URI or download; the worker runs the same
function on the same stored bytes, so both see the same pixels. The key is the SHA-256 of the
normalised pixels (and size), so one picture re-encoded differently is still one image to the
cache.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vlmq.errors import InputError

# Our own limits (checked on the header, before decoding) are stricter; PIL's bomb guard is a backstop.
Image.MAX_IMAGE_PIXELS = 200_000_000

_DATA_URI = re.compile(r"^data:(?P<mime>image/[a-z0-9.+-]+)?(?P<b64>;base64)?,(?P<data>.*)$", re.IGNORECASE | re.DOTALL)


_NOT_BASE64 = str.maketrans("", "", " \t\r\n")


class ImageError(InputError):
    """The bytes are not an image vlmq accepts. `code` is the API error code (4xx)."""


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, EXIF orientation applied, first frame of an animation
    key: str  # sha256 of the normalised pixels and size
    format: str | None

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.uint32)
        scale = 257 if arr.max(initial=0) > 255 else 1  # 16-bit data down to 8 bits
        return Image.fromarray((arr // scale).clip(0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def decode_image(data: bytes, *, max_pixels: int, max_side: int, with_key: bool = True) -> DecodedImage:
    """Decode and check image bytes; raise `ImageError` with a client-facing message.
    `with_key=False` skips hashing the pixels (workers already know the key)."""
    if not data:
        raise ImageError("invalid_image", "the image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width < 1 or height < 1:
                raise ImageError("invalid_image", f"the image has no pixels ({width}x{height})")
            if width > max_side or height > max_side:
                raise ImageError(
                    "image_too_large", f"the image is {width}x{height}; each side must be at most {max_side}", 413
                )
            if width * height > max_pixels:
                raise ImageError(
                    "image_too_large", f"the image has {width * height} pixels; at most {max_pixels}", 413
                )
            fmt = img.format
            img.seek(0)  # animated images: the first frame
            img.load()
            img = ImageOps.exif_transpose(img) or img
            rgb = _to_rgb(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError("image_too_large", f"the image is too large to decode: {exc}", 413) from exc
    except UnidentifiedImageError as exc:
        raise ImageError("invalid_image", "the data is not an image in a format vlmq reads") from exc
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise ImageError("invalid_image", f"the image cannot be decoded (truncated or corrupt): {exc}") from exc
    if not with_key:
        return DecodedImage(image=rgb, key="", format=fmt)
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
    digest.update(rgb.tobytes())
    return DecodedImage(image=rgb, key=digest.hexdigest(), format=fmt)


def decode_data_uri(uri: str, max_bytes: int) -> bytes:
    """The bytes of a `data:image/...;base64,...` URI."""
    match = _DATA_URI.match(uri)
    if not match or not match.group("b64"):
        raise ImageError("invalid_image_url", "image_url: a data URI must read data:image/<type>;base64,<data>")
    # RFC 2045 writes base64 in lines of at most 76 characters: line breaks (and spaces) are not data.
    payload = match.group("data").translate(_NOT_BASE64)
    if len(payload) * 3 // 4 > max_bytes:
        raise ImageError("image_too_large", f"image_url: the image is larger than {max_bytes} bytes", 413)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError("invalid_image_url", "image_url: the data URI is not valid base64") from exc


def to_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
