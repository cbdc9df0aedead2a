"""`vqa`: answer a question about an image. Generative (BLIP VQA) or classifier (ViLT, with scores)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from vlmq.jobtypes.base import JobType, Params, StrictModel, Text


class VqaParams(Params):
    type: Literal[JobType.vqa] = JobType.vqa
    question: Text = Field(..., min_length=1, max_length=1000)
    max_new_tokens: int = Field(10, ge=1, le=64, description="Generative models only.")
    num_beams: int = Field(1, ge=1, le=8, description="Generative models only.")
    top_k: int = Field(5, ge=1, le=50, description="Classifier models: how many scored answers.")

    @field_validator("question")
    @classmethod
    def _stripped(cls, value: str) -> str:
        return value.strip()

    def prompt_text(self) -> str | None:
        return self.question


class ScoredAnswer(StrictModel):
    answer: str
    score: float


class VqaOutput(StrictModel):
    answer: str
    scores: list[ScoredAnswer] | None = None
