"""`segment`: a mask per object for the labels of a PaliGemma prompt, "segment cat ; dog".

Per object: its label, its box in pixels of the original image (after EXIF orientation), its mask
as COCO's run-length encoding over the whole image (`vlmq/rle.py`; pycocotools reads it unchanged)
and the mask's area in pixels. An object whose mask codes are missing or malformed keeps its box,
with no mask and a `warning`; the job still succeeds. The worker also renders `annotated.png`:
each mask in a translucent colour, boxes and labels on top.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from PIL import Image
from pydantic import Field, field_validator

from vlmq import rle
from vlmq.jobtypes.base import GenerativeParams, JobTypeSpec, StrictModel, WithArtifacts
from vlmq.jobtypes.detect import Box, label_colours, label_prompt, label_prompt_pattern, render_boxes

SEGMENT_PATTERN = label_prompt_pattern("segment")
#: How opaque a mask's colour is over the image in `annotated.png`.
MASK_OPACITY = 0.45


class SegmentParams(GenerativeParams):
    type: Literal["segment"] = "segment"
    prompt: str = Field(..., max_length=500, examples=["segment cat", "segment car ; person"],
                        json_schema_extra={"pattern": SEGMENT_PATTERN})
    max_new_tokens: int = Field(128, ge=1, le=512, description="About 22 tokens per object.")

    question_field = "prompt"

    @field_validator("prompt")
    @classmethod
    def _is_segment_prompt(cls, value: str) -> str:
        return label_prompt("segment", SEGMENT_PATTERN, value)


class Rle(StrictModel):
    """COCO's compressed run-length encoding of a mask over the whole image."""

    size: list[int] = Field(..., min_length=2, max_length=2, description="[height, width]")
    counts: str


class SegmentObject(Box):
    mask: Rle | None = Field(None, description="None when the model's mask codes were missing or malformed.")
    area: int | None = Field(None, ge=0, description="Pixels in the mask.")
    warning: str | None = Field(None, description="Why the object has no mask.")


class SegmentOutput(WithArtifacts):
    objects: list[SegmentObject]
    width: int
    height: int
    text: str = Field(..., description="The model's raw text.")


def _hex_rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.float32)


def render_masks(image: Image.Image, objects: list[SegmentObject]) -> bytes:
    """`image` with each object's mask in its label's colour (translucent), then its box and label; PNG."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    colours = label_colours(objects)
    for obj in objects:
        if obj.mask is not None:
            mask = rle.decode(obj.mask.model_dump())
            pixels[mask] = pixels[mask] * (1 - MASK_OPACITY) + _hex_rgb(colours[obj.label]) * MASK_OPACITY
    return render_boxes(Image.fromarray(pixels.round().astype(np.uint8)), objects)


def annotate(image: Image.Image, output: Any, params: GenerativeParams) -> dict[str, bytes]:
    return {"annotated.png": render_masks(image, SegmentOutput.model_validate(output).objects)}


JOB_TYPE = JobTypeSpec(
    name="segment", title="Segment", summary="A mask per object for the labels of a 'segment a ; b' prompt.",
    params=SegmentParams, output=SegmentOutput, order=32, full_image=True, artifacts=annotate,
    example={"prompt": "segment cat"},
)
