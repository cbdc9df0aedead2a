"""`caption`: describe an image (BLIP, PaliGemma, any image-text-to-text model)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from vlmq.jobtypes.base import Decoding, Generated, GenerativeParams, JobTypeSpec, Stop, Text, beam_kwargs


class CaptionParams(GenerativeParams):
    type: Literal["caption"] = "caption"
    prompt: Text | None = Field(
        None, max_length=500, description="Conditional prefix, e.g. 'a photograph of' (BLIP)."
    )
    max_new_tokens: int = Field(30, ge=1, le=256)
    num_beams: int = Field(1, ge=1, le=8)
    early_stopping: bool = False
    decoding: Decoding = Decoding()
    stop: Stop | None = Field(None, description="Up to 4 strings: generation ends where the model writes one, "
                              "and the text ends before it.")

    question_field = "prompt"

    @property
    def sampled(self) -> bool:
        return self.decoding.sampled

    def generate_kwargs(self) -> dict[str, Any]:
        return {"max_new_tokens": self.max_new_tokens, **beam_kwargs(self.num_beams, self.early_stopping),
                **self.decoding.generate_kwargs()}


class CaptionOutput(Generated):
    text: str


JOB_TYPE = JobTypeSpec(
    name="caption", title="Caption", summary="Describe an image.", params=CaptionParams, output=CaptionOutput,
    order=10, streams=True,
)
