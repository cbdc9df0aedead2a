"""`render_boxes`: the annotated PNG of a detect job (its artifact, vlmq/jobtypes/detect.py)."""

from __future__ import annotations

import io

from PIL import Image
from skimage import data

from vlmq.jobtypes.detect import PALETTE, Box, label_colours, render_boxes


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def decode(png: bytes) -> Image.Image:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    return Image.open(io.BytesIO(png)).convert("RGB")


def test_boxes_are_drawn_in_one_colour_per_label():
    image = Image.new("RGB", (400, 300), "white")
    boxes = [
        Box(label="cat", x0=50, y0=100, x1=150, y1=200),
        Box(label="dog", x0=200, y0=100, x1=350, y1=250),
        Box(label="cat", x0=20, y0=220, x1=120, y1=290, score=0.5),
    ]
    out = decode(render_boxes(image, boxes))
    assert out.size == image.size
    assert label_colours(boxes) == {"cat": PALETTE[0], "dog": PALETTE[1]}
    # the left edges of the boxes, below their label tags
    assert out.getpixel((50, 180)) == rgb(PALETTE[0])
    assert out.getpixel((200, 230)) == rgb(PALETTE[1])
    assert out.getpixel((20, 285)) == rgb(PALETTE[0])
    # inside a box, away from edges and tags: untouched
    assert out.getpixel((100, 170)) == (255, 255, 255)
    # a filled tag with the label sits above the first box
    tag = out.crop((50, 70, 110, 99))
    assert rgb(PALETTE[0]) in {c for _, c in tag.getcolors(10_000)}
    assert len(tag.getcolors(10_000)) > 2  # tag colour plus the text's pixels
    assert image.getpixel((50, 180)) == (255, 255, 255)  # the input is not modified


def test_line_width_scales_with_the_image():
    def width_of_left_edge(size: int) -> int:
        image = Image.new("RGB", (size, size), "white")
        box = Box(label="x", x0=size / 4, y0=size / 4, x1=size * 3 / 4, y1=size * 3 / 4)
        out = decode(render_boxes(image, [box]))
        y = size // 2
        return sum(1 for x in range(size // 2) if out.getpixel((x, y)) != (255, 255, 255))

    small, large = width_of_left_edge(200), width_of_left_edge(2000)
    assert small >= 2 and large >= 4 * small


def test_no_boxes_gives_the_image_back_and_odd_boxes_do_not_fail():
    photo = Image.fromarray(data.astronaut())
    assert decode(render_boxes(photo, [])).tobytes() == photo.tobytes()
    boxes = [Box(label="edge", x0=-50, y0=-10, x1=600, y1=700), Box(label="tiny", x0=5, y0=5, x1=5, y1=5)]
    assert decode(render_boxes(photo.convert("L"), boxes)).size == photo.size
    many = [Box(label=f"l{i}", x0=i, y0=i, x1=i + 20, y1=i + 20) for i in range(len(PALETTE) + 2)]
    assert list(label_colours(many).values())[len(PALETTE)] == PALETTE[0]
    decode(render_boxes(photo, many))
