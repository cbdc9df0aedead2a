"""Response bodies of the API (pydantic, so /docs shows them)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from vlmq.fleet import GroupWorkerInfo, ModelFleet
from vlmq.jobtypes import JobType
from vlmq.registry import GroupSpec, ModelSpec
from vlmq.views import ErrorBody, ErrorInfo, JobUrls, JobView

__all__ = ["Delivery", "DeliveryList", "ErrorBody", "ErrorInfo", "GroupView", "JobList", "JobUrls", "JobView", "ModelList",
           "ModelView", "WorkerView"]


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
    group: str | None = Field(None, description="The model group whose group workers load it on demand.")

    @classmethod
    def of(cls, spec: ModelSpec, fleet: ModelFleet, group: str | None = None) -> ModelView:
        return cls(
            group=group,
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


class HeldView(BaseModel):
    model: str
    state: str = Field(..., description="loading | ready | error (its load failed: its jobs fail with the error).")
    load_s: float | None = None
    weights_bytes: int = Field(0, description="Parameters and buffers of the loaded weights.")
    error: str | None = None


class GroupWorkerView(BaseModel):
    name: str
    holds: list[HeldView] = Field(..., description="The members it holds, in the order it loaded them.")
    weights_bytes: int = Field(..., description="The weights of the members it holds, together.")
    rss_bytes: int = Field(..., description="The worker process's resident memory.")
    peak_rss_bytes: int
    loads: int = Field(..., description="Members loaded since it started.")
    evictions: int


class GroupView(BaseModel):
    name: str
    members: list[str]
    max_loaded: int
    max_memory_gb: float | None
    workers: list[GroupWorkerView] = Field(..., description="Its online group workers.")

    @classmethod
    def of(cls, spec: GroupSpec, workers: list[GroupWorkerInfo]) -> GroupView:
        return cls(name=spec.name, members=list(spec.members), max_loaded=spec.max_loaded,
                   max_memory_gb=spec.max_memory_gb, workers=[
                       GroupWorkerView(name=w.name, holds=[HeldView(model=h.model, state=h.state.value, load_s=h.load_s,
                                                                    weights_bytes=h.weights_bytes, error=h.error)
                                                           for h in w.held],
                                       weights_bytes=sum(h.weights_bytes for h in w.held), rss_bytes=w.rss_bytes,
                                       peak_rss_bytes=w.peak_rss_bytes, loads=w.loads, evictions=w.evictions)
                       for w in workers])


class ModelList(BaseModel):
    models: list[ModelView]
    groups: list[GroupView] = Field(default_factory=list, description="Model groups and what each group "
                                    "worker holds.")
