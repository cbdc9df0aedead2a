"""Image intake: formats and modes that work, and every kind of bad bytes refused with a code."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.utils.images import astronaut, encode
from vlmq.images import ImageError, decode_data_uri, decode_image

LIMITS = {"max_pixels": 40_000_000, "max_side": 12_000}


def _decode(data: bytes):
    return decode_image(data, **LIMITS)


@pytest.mark.parametrize(
    "make",
    [
        lambda: encode(astronaut().convert("CMYK"), "JPEG"),
        lambda: encode(Image.fromarray((np.arange(64 * 64, dtype=np.uint16) * 16).reshape(64, 64)), "PNG"),
        lambda: encode(astronaut().convert("P"), "PNG"),
        lambda: encode(astronaut().convert("RGBA"), "PNG"),
        lambda: encode(astronaut().convert("LA"), "PNG"),
        lambda: encode(astronaut(), "WEBP"),
        lambda: encode(astronaut(), "GIF", save_all=True,
                       append_images=[astronaut().rotate(90)], duration=100, loop=0),
    ],
    ids=["cmyk-jpeg", "16-bit", "palette", "alpha", "gray-alpha", "webp", "animated-gif"],
)
def test_modes_that_work_become_rgb(make) -> None:
    decoded = _decode(make())
    assert decoded.image.mode == "RGB" and decoded.width > 0 and decoded.height > 0


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), "red")
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90
    data = encode(img, "JPEG", exif=exif.tobytes())
    assert _decode(data).image.size == (20, 40)


def test_key_is_content_not_encoding() -> None:
    png = _decode(encode(astronaut(), "PNG"))
    bmp = _decode(encode(astronaut(), "BMP"))
    other = _decode(encode(astronaut().rotate(1), "PNG"))
    assert png.key == bmp.key and png.key != other.key


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "invalid_image"),
        (b"%PDF-1.4 not an image", "invalid_image"),
        (encode(astronaut(), "PNG")[:2000], "invalid_image"),
        (encode(astronaut(), "JPEG")[:3000], "invalid_image"),
    ],
    ids=["empty", "not-image", "truncated-png", "truncated-jpeg"],
)
def test_bad_bytes_are_refused(data: bytes, code: str) -> None:
    with pytest.raises(ImageError) as info:
        _decode(data)
    assert info.value.code == code and 400 <= info.value.status < 500


def test_too_wide_and_bombs_refused_from_header() -> None:
    wide = io.BytesIO()
    Image.new("1", (100_000, 1)).save(wide, "PNG")
    with pytest.raises(ImageError) as info:
        _decode(wide.getvalue())
    assert info.value.code == "image_too_large" and info.value.status == 413
    bomb = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(bomb, "PNG")  # 144 Mpx in ~20 kB
    assert len(bomb.getvalue()) < 100_000
    with pytest.raises(ImageError) as info:
        _decode(bomb.getvalue())
    assert info.value.code == "image_too_large"


def test_zero_pixel_image_refused() -> None:
    # a PNG header claiming 0x0 (PIL cannot write one; patch the IHDR of a 1x1)
    data = bytearray(encode(Image.new("RGB", (1, 1)), "PNG"))
    data[16:24] = (0).to_bytes(4, "big") * 2
    with pytest.raises(ImageError):
        _decode(bytes(data))


def test_data_uri() -> None:
    import base64

    raw = encode(astronaut())
    assert decode_data_uri("data:image/png;base64," + base64.b64encode(raw).decode(), 10**8) == raw
    for bad in ("data:image/png,notbase64", "data:image/png;base64,@@@", "nonsense"):
        with pytest.raises(ImageError):
            decode_data_uri(bad, 10**8)
