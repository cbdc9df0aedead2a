"""Response bodies of the API (pydantic, so /docs shows them)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from vlmq.fleet import ModelFleet
from vlmq.jobtypes import JobType
from vlmq.registry import ModelSpec
from vlmq.views import ErrorBody, ErrorInfo, JobUrls, JobView

__all__ = ["Delivery", "DeliveryList", "ErrorBody", "ErrorInfo", "JobList", "JobUrls", "JobView", "ModelList", "ModelView", "WorkerView"]


class Delivery(BaseModel):
    attempt: int
    event: str
    webhook_id: str
    at: float
    outcome: str = Field(..., description="delivered | retry | rejected | refused | gave_up")
    status_code: int | None = None
    error: str | None = None
    duration_ms: float | None = None


class DeliveryList(BaseModel):
    deliveries: list[Delivery]


class JobList(BaseModel):
    jobs: list[JobView]


class WorkerView(BaseModel):
    name: str
    state: str
    revision: str | None = None
    load_s: float | None = None


class ModelView(BaseModel):
    name: str
    adapter: str
    source: str
    tasks: list[JobType]
    dtype: str
    quantization: str | None
    device: str
    max_batch_size: int
    max_wait_ms: int
    queue_limit: int
    checkpoint_step: int | None
    description: str
    ready: bool = Field(..., description="At least one worker has the weights loaded.")
    workers_online: int
    workers_ready: int
    workers: list[WorkerView]
    queue_depth: int = Field(..., description="Messages waiting in the model's queues (both lanes).")
    queue_depth_by_lane: dict[str, int]
    setup_error: str | None = Field(None, description="The last failure of a worker to load this model.")
    revision: str | None = None

    @classmethod
    def of(cls, spec: ModelSpec, fleet: ModelFleet) -> ModelView:
        return cls(
            name=spec.name,
            adapter=spec.adapter,
            source=spec.source,
            tasks=list(spec.tasks),
            dtype=spec.dtype,
            quantization=spec.quantization,
            device=spec.device,
            max_batch_size=spec.max_batch_size,
            max_wait_ms=spec.max_wait_ms,
            queue_limit=spec.queue_limit,
            checkpoint_step=spec.checkpoint_step,
            description=spec.description,
            ready=fleet.ready_workers > 0,
            workers_online=len(fleet.workers),
            workers_ready=fleet.ready_workers,
            workers=[WorkerView(name=w.name, state=w.state.value, revision=w.revision, load_s=w.load_s) for w in fleet.workers],
            queue_depth=fleet.queue_depth,
            queue_depth_by_lane={lane.value: n for lane, n in fleet.depth.items()},
            setup_error=fleet.setup_error,
            revision=fleet.revision,
        )


class ModelList(BaseModel):
    models: list[ModelView]
