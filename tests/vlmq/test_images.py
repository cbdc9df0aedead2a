"""Image intake: formats and modes that work, and every kind of bad bytes refused with a code."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.utils.images import astronaut, encode
from vlmq.images import ImageError, check_image, content_key, decode_data_uri, decode_image

LIMITS = {"max_pixels": 40_000_000, "max_side": 12_000}


def _decode(data: bytes):
    return decode_image(data, **LIMITS)


def _check(data: bytes):
    return check_image(data, **LIMITS)


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
def test_modes_that_work_pass_the_check_and_decode_to_rgb(make) -> None:
    data = make()
    checked = _check(data)
    decoded = _decode(data)
    assert decoded.mode == "RGB" and decoded.size == (checked.width, checked.height)


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), "red")
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90
    data = encode(img, "JPEG", exif=exif.tobytes())
    assert _decode(data).size == (20, 40)


def test_key_is_the_bytes() -> None:
    png = encode(astronaut(), "PNG")
    assert _check(png).key == content_key(png) == _check(bytes(png)).key
    assert _check(encode(astronaut(), "BMP")).key != _check(png).key  # the same picture, another file


def _corrupt_png_chunk() -> bytes:
    data = bytearray(encode(astronaut(), "PNG"))
    data[len(data) // 2] ^= 0xFF  # a byte inside an IDAT chunk: its CRC no longer matches
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "invalid_image"),
        (b"%PDF-1.4 not an image", "invalid_image"),
        (encode(astronaut(), "PNG")[:2000], "invalid_image"),
        (encode(astronaut(), "JPEG")[:3000], "invalid_image"),
        (_corrupt_png_chunk(), "invalid_image"),
        (encode(astronaut(), "WEBP")[:5000], "invalid_image"),
    ],
    ids=["empty", "not-image", "truncated-png", "truncated-jpeg", "png-bad-crc", "truncated-webp"],
)
def test_bad_bytes_are_refused_by_the_check_and_the_decode(data: bytes, code: str) -> None:
    for step in (_check, _decode):
        with pytest.raises(ImageError) as info:
            step(data)
        assert info.value.code == code and 400 <= info.value.status < 500


def test_the_check_of_a_jpeg_reads_its_structure_not_its_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check of a JPEG never starts Pillow's pixel decoder (the decode does: the patch bites)."""
    from PIL import Image as PILImage

    def no_decoder(*args, **kwargs):
        raise AssertionError("the pixel decoder was started")

    data = encode(Image.fromarray(np.tile(np.asarray(astronaut()), (2, 2, 1))), "JPEG")
    monkeypatch.setattr(PILImage, "_getdecoder", no_decoder)
    checked = _check(data)
    assert (checked.width, checked.height, checked.format) == (1024, 1024, "JPEG")
    with pytest.raises(AssertionError, match="pixel decoder"):
        _decode(data)


@pytest.mark.parametrize("options", [{}, {"progressive": True}, {"subsampling": 0}, {"optimize": True}],
                         ids=["baseline", "progressive", "4:4:4", "optimized"])
@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_the_check_reads_a_jpegs_size_and_format_as_pillow_does(monkeypatch: pytest.MonkeyPatch, mode: str,
                                                                 options: dict) -> None:
    """The check reads a JPEG's frame header itself: the size Pillow reads, without Pillow."""
    from PIL import Image as PILImage

    data = encode(astronaut().resize((301, 173)).convert(mode), "JPEG", **options)
    with PILImage.open(io.BytesIO(data)) as img:
        expected = (img.width, img.height, img.format)
    monkeypatch.setattr(PILImage, "open", lambda *a, **k: pytest.fail("Pillow opened a JPEG at the check"))
    checked = _check(data)
    assert (checked.width, checked.height, checked.format) == expected == (301, 173, "JPEG")


def _sof(data: bytes) -> int:
    """Where a JPEG's baseline frame header (FFC0) starts."""
    return data.index(b"\xff\xc0")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d[:_sof(d) + 4] + b"\x0c" + d[_sof(d) + 5:], "of 12 bits"),  # 12-bit samples
        (lambda d: d[:_sof(d) + 9] + b"\x02" + d[_sof(d) + 10:], "2 components"),
        (lambda d: d[:_sof(d) + 1] + b"\xe5" + d[_sof(d) + 2:], "no frame header"),  # the SOF made an APP5
        (lambda d: d[:_sof(d) + 5] + b"\x00\x00" + d[_sof(d) + 7:], "no pixels"),  # height 0
        (lambda d: d[:_sof(d) + 2] + b"\xff\xff" + d[_sof(d) + 4:], "broken"),  # a length past the end
    ],
    ids=["12-bit", "2-components", "no-frame", "zero-height", "bad-length"],
)
def test_a_jpeg_frame_pillow_cannot_decode_is_refused_at_the_check(edit, message: str) -> None:
    data = edit(encode(astronaut(), "JPEG"))
    with pytest.raises(ImageError, match=message) as info:
        _check(data)
    assert info.value.code == "invalid_image" and info.value.status == 422
    with pytest.raises(ImageError):  # the worker's decode (Pillow) refuses it too
        _decode(data)


def test_a_jpeg_over_the_limits_is_refused_from_its_frame_header() -> None:
    data = encode(astronaut().resize((600, 200)), "JPEG")
    with pytest.raises(ImageError, match="each side must be at most 500") as info:
        check_image(data, max_pixels=10**9, max_side=500)
    assert info.value.code == "image_too_large" and info.value.status == 413
    with pytest.raises(ImageError, match="at most 100000"):
        check_image(data, max_pixels=100_000, max_side=10_000)


def test_a_jpeg_with_an_exif_thumbnail_and_data_after_its_end() -> None:
    """A camera JPEG: its EXIF thumbnail's end marker comes before the scan; a motion photo appends
    a video after the image's end. Both are images; cut inside the scan, neither is."""
    thumb = encode(astronaut().resize((64, 64)), "JPEG")
    exif = Image.Exif()
    exif[0x010F] = "vlmq test camera"
    photo = encode(astronaut(), "JPEG", exif=exif.tobytes() + thumb)  # the thumbnail rides in APP1
    assert b"\xff\xd9" in photo[:len(photo) // 3]  # an end-of-image marker before the main scan
    _check(photo)
    _check(photo + b"\x00\x00\x00\x18ftypmp42" + bytes(1000))
    with pytest.raises(ImageError):
        _check(photo[: len(photo) * 2 // 3])


def test_too_wide_and_bombs_refused_from_header() -> None:
    wide = io.BytesIO()
    Image.new("1", (100_000, 1)).save(wide, "PNG")
    with pytest.raises(ImageError) as info:
        _check(wide.getvalue())
    assert info.value.code == "image_too_large" and info.value.status == 413
    bomb = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(bomb, "PNG")  # 144 Mpx in ~20 kB
    assert len(bomb.getvalue()) < 100_000
    with pytest.raises(ImageError) as info:
        _check(bomb.getvalue())
    assert info.value.code == "image_too_large"


def test_zero_pixel_image_refused() -> None:
    # a PNG header claiming 0x0 (PIL cannot write one; patch the IHDR of a 1x1)
    data = bytearray(encode(Image.new("RGB", (1, 1)), "PNG"))
    data[16:24] = (0).to_bytes(4, "big") * 2
    with pytest.raises(ImageError):
        _check(bytes(data))


def test_data_uri() -> None:
    import base64

    raw = encode(astronaut())
    assert decode_data_uri("data:image/png;base64," + base64.b64encode(raw).decode(), 10**8) == raw
    for bad in ("data:image/png,notbase64", "data:image/png;base64,@@@", "nonsense"):
        with pytest.raises(ImageError):
            decode_data_uri(bad, 10**8)


def test_a_jpeg_is_decoded_at_the_smallest_scale_the_model_can_use() -> None:
    """libjpeg's scaled decode (1, 1/2, 1/4, 1/8): never smaller than asked, on both sides, also for a
    photo whose EXIF says it is rotated; other formats decode in full."""
    photo = encode(astronaut().resize((1024, 512)), "JPEG")
    assert _decode(photo).size == (1024, 512)
    small = decode_image(photo, **LIMITS, at_least=(100, 60))
    assert small.size == (128, 64)  # 1/8: still at least 100 x 60
    assert decode_image(photo, **LIMITS, at_least=(300, 60)).size == (512, 256)  # 1/2: 1/4 would be 256 wide
    rotated = Image.new("RGB", (400, 200), "red")
    exif = rotated.getexif()
    exif[0x0112] = 6  # shown rotated by 90 degrees: 200 x 400
    shown = decode_image(encode(rotated, "JPEG", exif=exif.tobytes()), **LIMITS, at_least=(50, 150))
    assert shown.size == (100, 200) and shown.width >= 50 and shown.height >= 150
    assert decode_image(encode(astronaut(), "PNG"), **LIMITS, at_least=(32, 32)).size == (512, 512)
