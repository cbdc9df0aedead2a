"""`caption`: describe an image (BLIP, PaliGemma, any image-text-to-text model)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vlmq.jobtypes.base import Decoding, JobType, Params, StrictModel, Text


class CaptionParams(Params):
    type: Literal[JobType.caption] = JobType.caption
    prompt: Text | None = Field(
        None, max_length=500, description="Conditional prefix, e.g. 'a photograph of' (BLIP)."
    )
    max_new_tokens: int = Field(30, ge=1, le=256)
    num_beams: int = Field(1, ge=1, le=8)
    early_stopping: bool = False
    decoding: Decoding = Decoding()

    @property
    def sampled(self) -> bool:
        return self.decoding.sampled

    def prompt_text(self) -> str | None:
        return self.prompt


class CaptionOutput(StrictModel):
    text: str
