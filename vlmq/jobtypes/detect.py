"""`detect`: boxes for the labels of a PaliGemma-style prompt, "detect dog ; person".

Boxes are in pixels of the original image (after EXIF orientation). The worker also renders an
annotated PNG (coloured boxes and labels), fetched from `GET /v1/jobs/{id}/annotated.png`.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from vlmq.jobtypes.base import BLANK_CHARS, CONTROL_CHARS, JobType, Params, StrictModel

_LABEL = f"[^;{CONTROL_CHARS}]*[^;{BLANK_CHARS}][^;{CONTROL_CHARS}]*"
#: "detect <label> [; <label> ...]": labels hold visible text and no control character. In the OpenAPI
#: schema too, so what the schema allows is what the API accepts.
DETECT_PATTERN = f"^[ \\t\\n\\r]*[Dd][Ee][Tt][Ee][Cc][Tt][ \\t\\n\\r]+{_LABEL}(;{_LABEL})*$"
_DETECT = re.compile(DETECT_PATTERN)


class DetectParams(Params):
    type: Literal[JobType.detect] = JobType.detect
    prompt: str = Field(..., max_length=500, examples=["detect dog ; person", "detect face ; eye"],
                        json_schema_extra={"pattern": DETECT_PATTERN})
    max_new_tokens: int = Field(64, ge=1, le=256, description="Generative detectors only.")

    @field_validator("prompt")
    @classmethod
    def _is_detect_prompt(cls, value: str) -> str:
        if not _DETECT.fullmatch(value):
            raise ValueError("prompt must read 'detect <label> [; <label> ...]' (visible text, no control characters)")
        labels = [x.strip() for x in value.strip()[len("detect") :].split(";")]
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
