"""Response bodies of the API (pydantic, so /docs shows them)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from vlmq.fleet import ModelFleet
from vlmq.jobs import CacheOutcome, JobRecord, JobStatus, iso
from vlmq.jobtypes import JobType
from vlmq.registry import ModelSpec


class ErrorInfo(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    error: ErrorInfo


class JobUrls(BaseModel):
    get: str
    events: str
    cancel: str


class JobView(BaseModel):
    id: str
    type: JobType
    status: JobStatus
    model: str | None = None
    models: list[str] | None = Field(None, description="compare: the models, in request order.")
    input: dict[str, Any] = Field(..., description="The job type's params as validated.")
    created_at: str
    started_at: str | None = None
    completed_at: str | None = None
    queue_ms: float | None = Field(None, description="From accepted to started (last attempt).")
    run_ms: float | None = Field(None, description="From started to finished.")
    attempts: int = 0
    output: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    cache: CacheOutcome
    cached_from: str | None = Field(None, description="For a hit or a joined job: the job that ran.")
    cancel_reason: str | None = None
    urls: JobUrls

    @classmethod
    def of(cls, record: JobRecord) -> JobView:
        output = record.output
        if record.type is JobType.compare:
            output = record.compare_output()
        error = None
        if record.error:
            error = ErrorInfo(code=record.error.get("code", "error"), message=record.error.get("message", ""))
        base = f"/v1/jobs/{record.id}"
        return cls(
            id=record.id,
            type=record.type,
            status=record.status,
            model=record.model,
            models=list(record.children) or None,
            input=record.params,
            created_at=iso(record.created_at),
            started_at=iso(record.started_at),
            completed_at=iso(record.completed_at),
            queue_ms=record.queue_ms,
            run_ms=record.run_ms,
            attempts=record.attempts,
            output=output,
            error=error,
            cache=record.cache,
            cached_from=record.cached_from,
            cancel_reason=record.cancel_reason,
            urls=JobUrls(get=base, events=f"{base}/events", cancel=f"{base}/cancel"),
        )


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
    queue_depth: int
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
            setup_error=fleet.setup_error,
            revision=fleet.revision,
        )


class ModelList(BaseModel):
    models: list[ModelView]
