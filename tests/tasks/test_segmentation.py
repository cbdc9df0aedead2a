"""Segmentation's parts: COCO RLE against pycocotools, PaliGemma's mask decoder (the real weights
file's layout, deterministic decoding), and reading a `segment` answer into placed masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as coco

from vlmq import rle
from vlmq.jobtypes.segment import SegmentObject, SegmentOutput, render_masks
from vlmq.tasks.adapters._paligemma_masks import MaskDecoder, place, write_random
from vlmq.tasks.adapters.base import SetupError
from vlmq.tasks.adapters.paligemma import read_objects

#: The state dict of big_vision's VQ-VAE as vae-oid.npz holds it: name -> shape.
REAL_LAYOUT = {
    "_vq_vae._embedding": (128, 512),
    "decoder.0.weight": (128, 512, 1, 1), "decoder.0.bias": (128,),
    **{f"decoder.{block}.net.{i}.{kind}": ((128, 128, k, k) if kind == "weight" else (128,))
       for block in (2, 3) for i, k in ((0, 3), (2, 3), (4, 1)) for kind in ("weight", "bias")},
    "decoder.4.weight": (128, 128, 4, 4), "decoder.4.bias": (128,),
    "decoder.6.weight": (128, 64, 4, 4), "decoder.6.bias": (64,),
    "decoder.8.weight": (64, 32, 4, 4), "decoder.8.bias": (32,),
    "decoder.10.weight": (32, 16, 4, 4), "decoder.10.bias": (16,),
    "decoder.12.weight": (1, 16, 1, 1), "decoder.12.bias": (1,),
}


@pytest.fixture(scope="module")
def decoder(tmp_path_factory) -> MaskDecoder:
    path = tmp_path_factory.mktemp("vae") / "vae-oid.npz"
    write_random(path, seed=5)
    return MaskDecoder.from_npz(path)


def _masks():
    rng = np.random.default_rng(0)
    yield np.zeros((7, 5), dtype=bool)
    yield np.ones((7, 5), dtype=bool)
    yield np.eye(1, 9, 3, dtype=bool)
    yield rng.random((40, 31)) > 0.5
    big = np.zeros((300, 200), dtype=bool)
    big[20:250, 30:120] = True  # long runs: counts past 5 bits, deltas that go negative
    yield big


@pytest.mark.parametrize("mask", list(_masks()), ids=lambda m: f"{m.shape}-{int(m.sum())}")
def test_rle_matches_pycocotools(mask: np.ndarray) -> None:
    ours = rle.encode(mask)
    theirs = coco.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert ours["counts"].encode() == theirs["counts"] and ours["size"] == list(theirs["size"])
    back = coco.decode({"size": ours["size"], "counts": ours["counts"].encode()})
    assert np.array_equal(back.astype(bool), mask) and np.array_equal(rle.decode(ours), mask)
    assert rle.area(ours) == int(coco.area(theirs)) == int(mask.sum())


def test_rle_refuses_counts_that_do_not_cover_the_mask() -> None:
    with pytest.raises(ValueError):
        rle.decode({"size": [2, 2], "counts": [1, 2]})


def test_the_decoder_file_has_the_real_layout_and_decodes_deterministically(tmp_path, decoder) -> None:
    path = tmp_path / "vae-oid.npz"
    write_random(path, seed=5)
    with np.load(path) as weights:
        assert {name: weights[name].shape for name in weights.files} == REAL_LAYOUT
    codes = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3], [0] * 8 + [127] * 8])
    once, again = decoder(codes), MaskDecoder.from_npz(path)(codes)
    assert once.shape == (2, 64, 64) and torch.equal(once, again)
    assert 0 <= once.min() and once.max() <= 1 and not torch.equal(once[0], once[1])


def test_a_file_that_is_not_the_decoder_is_a_setup_error(tmp_path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, other=np.zeros(3))
    with pytest.raises(SetupError, match="vae-oid"):
        MaskDecoder.from_npz(bad)
    with pytest.raises(SetupError):
        MaskDecoder.from_npz(tmp_path / "missing.npz")


def _object(y0: int, x0: int, y1: int, x1: int, label: str, codes: list[int] | None = None) -> str:
    segs = "".join(f"<seg{c:03d}>" for c in (codes if codes is not None else range(16)))
    return f"<loc{y0:04d}><loc{x0:04d}><loc{y1:04d}><loc{x1:04d}>{segs} {label}"


def test_ten_objects_are_placed_in_their_boxes(decoder) -> None:
    width, height = 400, 200  # not square: rows are y, columns x
    text = " ; ".join(_object(10 * i, 100 * i, 10 * i + 300, 100 * i + 80, f"thing {i}", [(7 * i + j) % 128
                      for j in range(16)]) for i in range(10))
    objects = read_objects(text, width, height, decoder)
    assert [o["label"] for o in objects] == [f"thing {i}" for i in range(10)]
    for i, obj in enumerate(objects):
        assert (obj["x0"], obj["y0"]) == (round(100 * i / 1024 * width, 2), round(10 * i / 1024 * height, 2))
        mask = rle.decode(obj["mask"])
        assert mask.shape == (height, width) and obj["area"] == int(mask.sum()) and "warning" not in obj
        rows, cols = np.nonzero(mask)
        if len(rows):  # every pixel inside the (rounded) box
            assert rows.min() >= round(obj["y0"]) and rows.max() < round(obj["y1"])
            assert cols.min() >= round(obj["x0"]) and cols.max() < round(obj["x1"])
    assert SegmentOutput.model_validate({"objects": objects, "width": width, "height": height, "text": text})


def test_a_box_at_the_border_is_clamped_and_its_mask_stays_inside(decoder) -> None:
    objects = read_objects(_object(0, 0, 1023, 1023, "all"), 64, 48, decoder)
    (obj,) = objects
    assert (obj["x0"], obj["y0"], obj["x1"], obj["y1"]) == (0, 0, round(1023 / 1024 * 64, 2), round(1023 / 1024 * 48, 2))
    assert rle.decode(obj["mask"]).shape == (48, 64)


def test_placing_scales_the_mask_into_the_box() -> None:
    left_half = np.zeros((64, 64), dtype=np.float32)
    left_half[:, :32] = 1.0
    full = place(left_half, (10, 20, 30, 60), 50, 80)
    assert full[20:60, 10:20].all() and not full[20:60, 20:30].any()
    assert full.sum() == 10 * 40 and not full[:20].any() and not full[60:].any()


def test_malformed_codes_keep_the_box_with_a_warning(decoder) -> None:
    text = " ; ".join([_object(0, 0, 500, 500, "short", list(range(8))),
                       _object(0, 0, 500, 500, "nocodes", []),
                       _object(0, 0, 500, 500, "wide", [200] * 16),
                       "<loc0001><loc0002> partial",  # not four locations: skipped, as detect skips it
                       _object(0, 0, 500, 500, "fine")])
    objects = {o["label"]: o for o in read_objects(text, 100, 100, decoder)}
    assert set(objects) == {"short", "nocodes", "wide", "fine"}
    for label in ("short", "nocodes", "wide"):
        assert "mask" not in objects[label] and objects[label]["warning"] and objects[label]["x1"] > 0
    assert "8 of 16" in objects["short"]["warning"] and "range" in objects["wide"]["warning"]
    assert objects["fine"]["mask"] and "warning" not in objects["fine"]
    assert read_objects("no objects at all", 100, 100, decoder) == []


def test_the_annotated_image_colours_the_mask_only() -> None:
    image = Image.new("RGB", (60, 40), (0, 0, 0))
    mask = np.zeros((40, 60), dtype=bool)
    mask[5:15, 40:55] = True
    obj = SegmentObject(label="x", x0=38, y0=3, x1=58, y1=30, mask=rle.encode(mask), area=int(mask.sum()))
    import io

    drawn = np.asarray(Image.open(io.BytesIO(render_masks(image, [obj]))).convert("RGB"))
    assert drawn.shape == (40, 60, 3)
    assert drawn[10, 47].any() and not drawn[35, 5].any()  # inside the mask coloured; far outside untouched
