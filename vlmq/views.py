"""The public JSON form of a job: what the API answers, webhooks carry and clients read."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from vlmq.fanout import parent_output
from vlmq.jobs import CacheOutcome, JobRecord, JobStatus, Lane, iso
from vlmq.jobtypes import JobType, job_type


def output_text(output: dict[str, Any] | None) -> str:
    """The text of a job's output, whatever its type (`text`, else `answer`), or ''."""
    output = output or {}
    return str(output.get("text") or output.get("answer") or "")


def artifact_url(job_id: str, name: str) -> str:
    """Where a job's artifact is served (`GET /v1/jobs/{id}/artifacts/{name}`)."""
    return f"/v1/jobs/{job_id}/artifacts/{name}"


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
    load_wait_ms: float | None = Field(
        None, description="Of queue_ms, the time it waited for its model's weights to load (a group worker "
        "loading the model on demand, or a worker starting); null: the model was loaded when it arrived.")
    attempts: int = 0
    output: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    cache: CacheOutcome
    cached_from: str | None = Field(None, description="For a hit or a joined job: the job that ran.")
    cancel_reason: str | None = None
    lane: Lane
    position: int | None = Field(None, description="Queued: jobs ahead of it in its lane (estimate in bulk).")
    eta_s: float | None = Field(None, description="Queued: estimated seconds until it starts.")
    urls: JobUrls

    @classmethod
    def of(cls, record: JobRecord, place: tuple[int | None, float | None] = (None, None)) -> JobView:
        output = record.output
        if job_type(record.type).fan_out:
            output = parent_output(record)
        elif output and output.get("artifacts"):  # a cache answer's artifacts are served under its own id
            output = {**output, "artifacts": {name: artifact_url(record.id, name) for name in output["artifacts"]}}
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
            load_wait_ms=record.load_wait_ms,
            attempts=record.attempts,
            output=output,
            error=error,
            cache=record.cache,
            cached_from=record.cached_from,
            cancel_reason=record.cancel_reason,
            lane=record.lane,
            position=place[0],
            eta_s=place[1],
            urls=JobUrls(get=base, events=f"{base}/events", cancel=f"{base}/cancel"),
        )


