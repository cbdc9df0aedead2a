"""`compare`: one image and one task run by 2..N models (or checkpoints) side by side.

The API fans the job out: one child job per model, each on that model's own queue. The compare
job's output maps each model to its child's output or to that model's own error, so one failing
model never fails the others. It fails only when every model failed.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from vlmq.jobtypes.base import JobType, Params, StrictModel
from vlmq.jobtypes.caption import CaptionParams
from vlmq.jobtypes.chat import ChatParams
from vlmq.jobtypes.detect import DetectParams
from vlmq.jobtypes.vqa import VqaParams

TaskParams = Annotated[CaptionParams | VqaParams | DetectParams | ChatParams, Field(discriminator="type")]


class CompareParams(Params):
    type: Literal[JobType.compare] = JobType.compare
    models: list[str] = Field(..., min_length=2, max_length=8)
    task: TaskParams = Field(..., description="The job every model runs, without model or image.")

    @field_validator("models")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("models must be distinct")
        return value

    @property
    def sampled(self) -> bool:
        return self.task.sampled


class ModelOutcome(StrictModel):
    status: str
    job_id: str
    output: dict | None = None
    error: dict | None = None


class CompareOutput(StrictModel):
    results: dict[str, ModelOutcome]
