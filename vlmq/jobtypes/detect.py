"""`detect`: boxes for the labels of a PaliGemma-style prompt, "detect dog ; person".

Boxes are in pixels of the original image (after EXIF orientation). The worker also renders an
annotated PNG (coloured boxes and labels): the artifact `annotated.png`, fetched from
`GET /v1/jobs/{id}/artifacts/annotated.png` (the output's `artifacts` holds its URL).
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any, Literal

from PIL import Image, ImageDraw, ImageFont
from pydantic import Field, field_validator

from vlmq.jobtypes.base import (
    BLANK_CHARS,
    CONTROL_CHARS,
    GenerativeParams,
    JobTypeSpec,
    StrictModel,
    WithArtifacts,
)

#: A label of a task prompt: visible text, no ";" and no control character.
LABEL_PATTERN = f"[^;{CONTROL_CHARS}]*[^;{BLANK_CHARS}][^;{CONTROL_CHARS}]*"


def label_prompt_pattern(keyword: str) -> str:
    """"<keyword> <label> [; <label> ...]" (the keyword in any case; labels hold visible text and no
    control character) as a regular expression. In the OpenAPI schema too, so what the schema allows
    is what the API accepts."""
    letters = "".join(f"[{c.upper()}{c.lower()}]" for c in keyword)
    return f"^[ \\t\\n\\r]*{letters}[ \\t\\n\\r]+{LABEL_PATTERN}(;{LABEL_PATTERN})*$"


def label_prompt(keyword: str, pattern: str, value: str) -> str:
    """A prompt that matches `pattern` (`label_prompt_pattern(keyword)`), written "<keyword> a ; b";
    a ValueError naming the form otherwise."""
    if not re.fullmatch(pattern, value):
        raise ValueError(f"prompt must read '{keyword} <label> [; <label> ...]' (visible text, no control characters)")
    labels = [x.strip() for x in value.strip()[len(keyword) :].split(";")]
    return f"{keyword} " + " ; ".join(labels)


DETECT_PATTERN = label_prompt_pattern("detect")


class DetectParams(GenerativeParams):
    type: Literal["detect"] = "detect"
    prompt: str = Field(..., max_length=500, examples=["detect dog ; person", "detect face ; eye"],
                        json_schema_extra={"pattern": DETECT_PATTERN})
    max_new_tokens: int = Field(64, ge=1, le=256, description="Generative detectors only.")

    question_field = "prompt"

    @field_validator("prompt")
    @classmethod
    def _is_detect_prompt(cls, value: str) -> str:
        return label_prompt("detect", DETECT_PATTERN, value)

    @property
    def labels(self) -> list[str]:
        return [x.strip() for x in self.prompt[len("detect ") :].split(";")]


class Box(StrictModel):
    label: str
    x0: float
    y0: float
    x1: float
    y1: float
    score: float | None = None


class DetectOutput(WithArtifacts):
    boxes: list[Box]
    width: int
    height: int
    text: str | None = Field(None, description="The model's raw text, for generative detectors.")


#: One colour per label, in order of first appearance (then round again).
PALETTE = ("#4285f4", "#db4437", "#f4b400", "#0f9d58", "#e48ef1", "#00acc1", "#ff7043", "#9e9d24")


def label_colours(boxes: Sequence[Box]) -> dict[str, str]:
    colours: dict[str, str] = {}
    for box in boxes:
        if box.label not in colours:
            colours[box.label] = PALETTE[len(colours) % len(PALETTE)]
    return colours


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _text_colour(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 160 else "#ffffff"


def render_boxes(image: Image.Image, boxes: Sequence[Box]) -> bytes:
    """`image` with each box drawn as a rectangle and its label on a filled tag; PNG bytes.

    Line width and text size scale with the image. The input image is not modified.
    """
    canvas = image.convert("RGB")  # a copy
    width, height = canvas.size
    side = max(1, min(width, height))
    line = max(2, round(side / 200))
    font = _font(max(10, round(side / 30)))
    draw = ImageDraw.Draw(canvas)
    colours = label_colours(boxes)
    for box in boxes:
        colour = colours[box.label]
        x0, x1 = sorted((min(max(box.x0, 0), width - 1), min(max(box.x1, 0), width - 1)))
        y0, y1 = sorted((min(max(box.y0, 0), height - 1), min(max(box.y1, 0), height - 1)))
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=line)
        text = box.label if box.score is None else f"{box.label} {box.score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        pad = max(2, line)
        tag_w, tag_h = right - left + 2 * pad, bottom - top + 2 * pad
        tag_x = min(x0, max(0, width - tag_w))
        tag_y = y0 - tag_h if y0 - tag_h >= 0 else y0  # above the box, or inside it at the top edge
        draw.rectangle((tag_x, tag_y, tag_x + tag_w, tag_y + tag_h), fill=colour)
        draw.text((tag_x + pad - left, tag_y + pad - top), text, fill=_text_colour(colour), font=font)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def annotate(image: Image.Image, output: Any, params: GenerativeParams) -> dict[str, bytes]:
    return {"annotated.png": render_boxes(image, DetectOutput.model_validate(output).boxes)}


JOB_TYPE = JobTypeSpec(
    name="detect", title="Detect", summary="Boxes for the labels of a 'detect a ; b' prompt.", params=DetectParams,
    output=DetectOutput, order=30, full_image=True, artifacts=annotate, example={"prompt": "detect face"},
)
