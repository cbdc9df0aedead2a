"""`vqa`: answer a question about an image. Generative (BLIP VQA) or classifier (ViLT, with scores)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from vlmq.jobtypes.base import Generated, GenerativeParams, JobTypeSpec, StrictModel, Text, beam_kwargs


class VqaParams(GenerativeParams):
    type: Literal["vqa"] = "vqa"
    question: Text = Field(..., min_length=1, max_length=1000)
    max_new_tokens: int = Field(10, ge=1, le=64, description="Generative models only.")
    num_beams: int = Field(1, ge=1, le=8, description="Generative models only.")
    top_k: int = Field(5, ge=1, le=50, description="Classifier models: how many scored answers.")

    question_field = "question"

    @field_validator("question")
    @classmethod
    def _stripped(cls, value: str) -> str:
        return value.strip()

    def generate_kwargs(self) -> dict[str, Any]:
        return {"max_new_tokens": self.max_new_tokens, **beam_kwargs(self.num_beams), "do_sample": False}


class ScoredAnswer(StrictModel):
    answer: str
    score: float


class VqaOutput(Generated):
    answer: str
    scores: list[ScoredAnswer] | None = None


JOB_TYPE = JobTypeSpec(
    name="vqa", title="VQA", summary="Answer a question about an image.", params=VqaParams, output=VqaOutput,
    order=20, semantic=True, example={"question": "what is in the picture?"},
)
