"""`ocr`: the text written in an image, read by an image-text-to-text model through its prompt
(PaliGemma's `ocr` task prompt; a chat model is asked to transcribe)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vlmq.jobtypes.base import Generated, GenerativeParams, JobTypeSpec


class OcrParams(GenerativeParams):
    type: Literal["ocr"] = "ocr"
    max_new_tokens: int = Field(128, ge=1, le=512)


class OcrOutput(Generated):
    text: str = Field(..., description="The text read in the image, as the model wrote it.")


JOB_TYPE = JobTypeSpec(
    name="ocr", title="OCR", summary="Read the text in an image.", params=OcrParams, output=OcrOutput,
    order=35, streams=True,
)
