"""`detect`: boxes for the labels of a PaliGemma-style prompt, "detect dog ; person".

Boxes are in pixels of the original image (after EXIF orientation). The worker also renders an
annotated PNG (coloured boxes and labels), fetched from `GET /v1/jobs/{id}/annotated.png`.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from vlmq.jobtypes.base import JobType, Params, StrictModel

_DETECT = re.compile(r"^\s*detect\s+(?P<labels>.+)$", re.IGNORECASE | re.DOTALL)


class DetectParams(Params):
    type: Literal[JobType.detect] = JobType.detect
    prompt: str = Field(..., max_length=500, examples=["detect dog ; person", "detect face ; eye"])
    max_new_tokens: int = Field(64, ge=1, le=256, description="Generative detectors only.")

    @field_validator("prompt")
    @classmethod
    def _is_detect_prompt(cls, value: str) -> str:
        match = _DETECT.match(value)
        labels = [x.strip() for x in match.group("labels").split(";")] if match else []
        if not labels or not all(labels):
            raise ValueError("prompt must read 'detect <label> [; <label> ...]'")
        return "detect " + " ; ".join(labels)

    @property
    def labels(self) -> list[str]:
        return [x.strip() for x in self.prompt[len("detect ") :].split(";")]

    def prompt_text(self) -> str | None:
        return self.prompt


class Box(StrictModel):
    label: str
    x0: float
    y0: float
    x1: float
    y1: float
    score: float | None = None


class DetectOutput(StrictModel):
    boxes: list[Box]
    width: int
    height: int
    text: str | None = Field(None, description="The model's raw text, for generative detectors.")
    annotated_url: str | None = None
