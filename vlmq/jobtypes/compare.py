"""`compare`: one image and one task run by 2..N models (or checkpoints) side by side.

A fan-out (vlmq/fanout.py, Celery canvas's `group`): one child job per model, each on that model's
own queue. The compare job's output maps each model to its child's output or to that model's own
error, so one failing model never fails the others. It fails only when every model failed.
`task` is any job type that runs on one model (the union is built by `vlmq.jobtypes`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from vlmq.jobtypes.base import FanOutParams, JobTypeSpec, Params, StrictModel

if TYPE_CHECKING:
    TaskParams = Params


class CompareParams(FanOutParams):
    type: Literal["compare"] = "compare"
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

    def branches(self) -> list[tuple[str, Params]]:
        return [(model, self.task) for model in self.models]


class ModelOutcome(StrictModel):
    status: str
    job_id: str
    output: dict | None = None
    error: dict | None = None


class CompareOutput(StrictModel):
    results: dict[str, ModelOutcome]


JOB_TYPE = JobTypeSpec(
    name="compare", title="Compare", summary="One task run by several models side by side.",
    params=CompareParams, output=CompareOutput, order=90, fan_out=True,
)
