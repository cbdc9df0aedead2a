"""Image intake: check bytes at the API, decode them to RGB in the worker, key them by content.

The API runs `check_image` on every upload, data URI or download: the header (format, size
limits, which refuse a decompression bomb before any pixel) and a structural check, enough to refuse
a non-image or a truncated or corrupt file with a 4xx at submit without paying for a decode: a
JPEG's segments are walked to its first scan, after which its end-of-image marker must come (a scan
cannot contain one; an EXIF thumbnail's comes before the scan); a PNG's chunks are all read and their
CRCs checked, through IEND; other formats (GIF, WebP, TIFF, BMP...) are decoded. The worker runs
`decode_image` (full decode, EXIF orientation, RGB) before the model; a file that passed the check and
still fails there fails its job (`invalid_image`).

The content key (the cache's image identity) is the SHA-256 of the bytes as received: the same
file is the same image; the same picture encoded differently is another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import struct
import warnings
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vlmq.errors import InputError

# Our own limits (checked on the header, before decoding) are stricter; PIL's bomb guard is a backstop,
# and its warning (over MAX_IMAGE_PIXELS, under twice that) is an error in every vlmq process: set once
# here, not per image (a `warnings.catch_warnings()` per check was 2% of a submit).
Image.MAX_IMAGE_PIXELS = 200_000_000
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)

_DATA_URI = re.compile(r"^data:(?P<mime>image/[a-z0-9.+-]+)?(?P<b64>;base64)?,(?P<data>.*)$", re.IGNORECASE | re.DOTALL)


_NOT_BASE64 = str.maketrans("", "", " \t\r\n")
_ORIENTATION = 0x0112


class ImageError(InputError):
    """The bytes are not an image vlmq accepts. `code` is the API error code (4xx)."""


@dataclass(frozen=True)
class CheckedImage:
    """Bytes that `check_image` let through: their format and size, and their content key."""

    data: bytes = field(repr=False)
    format: str | None
    width: int
    height: int

    @cached_property
    def key(self) -> str:
        """The SHA-256 of the bytes, hashed when first asked for: only the cache asks (a 240 KB photo
        takes ~0.1 ms to hash, 4% of a submit that does not use the cache)."""
        return content_key(self.data)


def content_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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


def _check_size(width: int, height: int, max_pixels: int, max_side: int) -> None:
    if width < 1 or height < 1:
        raise ImageError("invalid_image", f"the image has no pixels ({width}x{height})")
    if width > max_side or height > max_side:
        raise ImageError("image_too_large", f"the image is {width}x{height}; each side must be at most {max_side}", 413)
    if width * height > max_pixels:
        raise ImageError("image_too_large", f"the image has {width * height} pixels; at most {max_pixels}", 413)


def _open(data: bytes, max_pixels: int, max_side: int) -> Image.Image:
    """The image's header, its size checked against the limits (nothing decoded yet)."""
    if not data:
        raise ImageError("invalid_image", "the image is empty")
    img = Image.open(io.BytesIO(data))
    _check_size(img.width, img.height, max_pixels, max_side)
    return img


def _refusing(fn):
    """Run `fn`, turning what Pillow raises on bad bytes into `ImageError` (a 4xx)."""
    try:
        return fn()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError("image_too_large", f"the image is too large to decode: {exc}", 413) from exc
    except UnidentifiedImageError as exc:
        raise ImageError("invalid_image", "the data is not an image in a format vlmq reads") from exc
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError, struct.error) as exc:
        raise ImageError("invalid_image", f"the image cannot be decoded (truncated or corrupt): {exc}") from exc


_JPEG = b"\xff\xd8\xff"  # SOI and the next marker's first byte: what Pillow's JPEG plugin accepts
_SOS, _EOI, _STANDALONE = 0xDA, b"\xff\xd9", frozenset({0x01, *range(0xD0, 0xD8)})
#: Start-of-frame markers (baseline, progressive, lossless, arithmetic...): the frame's size is in them.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_BROKEN = "the JPEG's segments are broken (truncated or corrupt)"


def _check_jpeg(data: bytes) -> tuple[int, int]:
    """The JPEG's (width, height), from its frame header. Segments well formed from SOI to the first
    scan (SOS), a frame Pillow decodes (8-bit samples; 1, 3 or 4 components) before it, and an
    end-of-image marker after it."""
    at, size = 2, None  # after SOI
    while True:
        if at + 4 > len(data) or data[at] != 0xFF:
            raise ImageError("invalid_image", _BROKEN)
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _STANDALONE:
            at += 2
            continue
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if length < 2 or at + 2 + length > len(data):
            raise ImageError("invalid_image", _BROKEN)
        if marker in _SOF and size is None:
            if length < 8:
                raise ImageError("invalid_image", _BROKEN)
            bits, height, width, components = struct.unpack_from(">BHHB", data, at + 4)
            if bits != 8 or components not in (1, 3, 4):
                raise ImageError("invalid_image", f"the JPEG has {components} components of {bits} bits; "
                                                  "vlmq reads 1, 3 or 4 of 8 bits")
            size = width, height
        at += 2 + length
        if marker == _SOS:
            break
    if size is None:
        raise ImageError("invalid_image", "the JPEG has no frame header before its scan")
    if data.rfind(_EOI, at) < 0:  # from the end, where it is: a scan from the front read every byte (~1 GB/s)
        raise ImageError("invalid_image", "the JPEG is truncated: no end of image after its scan")
    return size


def check_image(data: bytes, *, max_pixels: int, max_side: int) -> CheckedImage:
    """The API's check: header, limits and a structural check (see the module's docstring). A JPEG,
    the common case, is read here without Pillow (its `Image.open` was 6% of a submit)."""
    if data.startswith(_JPEG):
        width, height = _check_jpeg(data)
        _check_size(width, height, max_pixels, max_side)
        return CheckedImage(data, "JPEG", width, height)

    def check() -> CheckedImage:
        img = _open(data, max_pixels, max_side)
        if img.format == "PNG":
            img.verify()
        else:
            img.seek(0)
            img.load()
        return CheckedImage(data, img.format, img.width, img.height)

    return _refusing(check)


def decode_image(data: bytes, *, max_pixels: int, max_side: int,
                 at_least: tuple[int, int] | None = None) -> Image.Image:
    """The image, for a model: RGB, EXIF orientation applied, an animation's first frame. With
    `at_least` (width, height), a JPEG is decoded at the smallest of 1, 1/2, 1/4, 1/8 of its size
    that is still at least that large on both sides (libjpeg's scaled decode: a fraction of the work)."""

    def decode() -> Image.Image:
        img = _open(data, max_pixels, max_side)
        if at_least is not None and img.format == "JPEG":
            width, height = at_least
            if (img.getexif().get(_ORIENTATION) or 1) >= 5:  # rotated by 90 degrees: the sides swap
                width, height = height, width
            img.draft("RGB", (width, height))
        img.seek(0)  # animated images: the first frame
        img.load()
        return _to_rgb(ImageOps.exif_transpose(img) or img)

    return _refusing(decode)


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
