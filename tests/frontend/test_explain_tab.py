"""The Explain tab's drawing (no browser): the heat of the chosen word over the image it sent, in
the orientation the workers see, and the words' colours and labels."""

from __future__ import annotations

import numpy as np
from PIL import Image

from vlmq.frontend.tabs.explain import CHOSEN, WORD, colours, heat_image, heat_label, words_of
from vlmq.jobtypes.explain import encode_heat


def _output() -> dict:
    left, right = np.zeros((2, 2), dtype=np.float32), np.zeros((2, 2), dtype=np.float32)
    left[:, 0], right[:, 1] = 0.5, 0.5
    return {"grid": [2, 2], "tokens": [{"text": "cat", "heat": encode_heat(left)},
                                       {"text": "sits", "heat": encode_heat(right)}]}


def test_the_chosen_words_heat_is_drawn_in_the_images_shown_orientation(tmp_path) -> None:
    stored = Image.new("RGB", (60, 20), (128, 128, 128))  # shown rotated by 90 degrees: 20 x 60
    exif = stored.getexif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    stored.save(path, exif=exif.tobytes())
    output = _output()
    first = np.asarray(heat_image(str(path), output, 0, 0.8)).astype(int)
    second = np.asarray(heat_image(str(path), output, 1, 0.8)).astype(int)
    assert first.shape == (60, 20, 3)
    change = lambda drawn: np.abs(drawn - 128).sum(axis=2)
    assert change(first)[30, 1] > change(first)[30, 18] and change(second)[30, 18] > change(second)[30, 1]
    faint = np.asarray(heat_image(str(path), output, 0, 0.1)).astype(int)
    assert change(faint)[30, 1] < change(first)[30, 1]  # the opacity
    assert heat_image(str(path), {"grid": [2, 2], "tokens": []}, None, 0.5) is None


def test_words_colours_and_labels() -> None:
    output = _output()
    assert words_of(output) == [("cat", "0"), ("sits", "1")]
    assert colours(output, 1) == {"0": WORD, "1": CHOSEN} and colours(output, None) == {"0": WORD, "1": WORD}
    assert "sits" in heat_label(output, 1) and "whole answer" in heat_label(output, None)
