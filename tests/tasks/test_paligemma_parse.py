"""`parse_loc_boxes`: PaliGemma's detection text to pixel boxes, on hand-written outputs."""

from __future__ import annotations

import pytest

from vlmq.tasks.adapters.paligemma import parse_loc_boxes


def as_tuples(boxes):
    return [(b.label, b.x0, b.y0, b.x1, b.y1) for b in boxes]


def test_one_box_in_pixels_of_the_original_image():
    # y0 x0 y1 x1 over 1024 bins: x = v / 1024 * width, y = v / 1024 * height
    boxes = parse_loc_boxes("<loc0256><loc0128><loc0768><loc0896> dog", width=800, height=400)
    assert as_tuples(boxes) == [("dog", 100.0, 100.0, 700.0, 300.0)]
    assert boxes[0].score is None


def test_several_entries_and_labels():
    text = (
        "<loc0000><loc0000><loc0512><loc0512> cat ; <loc0512><loc0512><loc1023><loc1023> dog ; "
        "<loc0100><loc0200><loc0300><loc0400> hot dog"
    )
    boxes = parse_loc_boxes(text, width=1024, height=2048)
    assert as_tuples(boxes) == [
        ("cat", 0.0, 0.0, 512.0, 1024.0),
        ("dog", 512.0, 1024.0, 1023.0, 2046.0),
        ("hot dog", 200.0, 200.0, 400.0, 600.0),
    ]


def test_entries_without_separator_and_with_segmentation_tokens():
    text = (
        "<loc0010><loc0020><loc0030><loc0040><seg001><seg127> person"
        "<loc0100><loc0100><loc0200><loc0200> person"
    )
    boxes = parse_loc_boxes(text, width=1024, height=1024)
    assert as_tuples(boxes) == [("person", 20.0, 10.0, 40.0, 30.0), ("person", 100.0, 100.0, 200.0, 200.0)]


def test_coordinates_are_ordered_and_clamped():
    (box,) = parse_loc_boxes("<loc0900><loc0800><loc0100><loc0200> kite", width=1024, height=1024)
    assert as_tuples([box]) == [("kite", 200.0, 100.0, 800.0, 900.0)]
    (edge,) = parse_loc_boxes("<loc0000><loc0000><loc1023><loc1023> sky", width=10, height=10)
    assert 0 <= edge.x0 < edge.x1 <= 10 and 0 <= edge.y0 < edge.y1 <= 10


@pytest.mark.parametrize(
    "text",
    [
        "",
        "no boxes here",
        "<loc0100><loc0100><loc0200> dog",  # three location tokens
        "<loc0100><loc0100><loc0200><loc0200>",  # no label
        "<loc0100><loc0100><loc0200><loc0200> ; cat",  # empty label
        "<loc0100><loc0100><loc0100><loc0200> flat",  # no height
        "<loc0100><loc0100><loc0200><loc2000> dog",  # out of range
        "<loc100><loc0100><loc0200><loc0200> dog",  # malformed token
    ],
)
def test_malformed_entries_are_skipped(text):
    assert parse_loc_boxes(text, width=640, height=480) == []


def test_good_entries_survive_malformed_neighbours():
    text = "<loc0100><loc0100> broken ; <loc0000><loc0000><loc0512><loc0512> cat ; <loc0001> x"
    assert as_tuples(parse_loc_boxes(text, width=512, height=512)) == [("cat", 0.0, 0.0, 256.0, 256.0)]
