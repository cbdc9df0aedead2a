"""/v1/jobs: submit a job, read it, fetch what it produced."""

from __future__ import annotations

import json
import re
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sse_starlette.sse import EventSourceResponse, ServerSentEvent

from vlmq.api.deps import RegistryDep, ServicesDep, SettingsDep, StoreDep
from vlmq.api.errors import ApiError
from vlmq.api.events import follow
from vlmq.api.intake import load_image, read_submission
from vlmq.api.schemas import ErrorBody, JobList, JobView
from vlmq.api.submit import check_models, create_jobs
from vlmq.store import EVENTS

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
_STREAM_ID = re.compile(r"^\d+-\d+$")

ERRORS = {
    400: {"model": ErrorBody, "description": "Malformed JSON."},
    413: {"model": ErrorBody, "description": "Body or image too large."},
    415: {"model": ErrorBody, "description": "Neither JSON nor multipart."},
    422: {"model": ErrorBody, "description": "Invalid request; `error.field` names the field."},
    503: {"model": ErrorBody, "description": "Redis unreachable; retry after Retry-After seconds."},
}

SUBMIT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["request", "image"],
                    "properties": {
                        "request": {"type": "string", "description": "The job request as JSON, without image_url."},
                        "image": {"type": "string", "format": "binary"},
                    },
                }
            },
        },
    }
}


@router.post(
    "",
    status_code=202,
    response_model=JobView,
    responses=ERRORS,
    openapi_extra=SUBMIT_BODY,
    summary="Submit a job",
)
async def submit_job(request: Request, response: Response, services: ServicesDep, settings: SettingsDep,
                     registry: RegistryDep) -> JobView:
    """Validate, store the image once by content, enqueue; answers at once with the job (202)."""
    job_request, upload = await read_submission(request, settings)
    check_models(job_request, registry)
    image, image_bytes = await run_in_threadpool(load_image, job_request.image_url, upload, settings)
    record = await run_in_threadpool(create_jobs, services, job_request, image, image_bytes)
    response.headers["Location"] = f"/v1/jobs/{record.id}"
    return JobView.of(record)


@router.get("", response_model=JobList)
def list_jobs(store: StoreDep, limit: Annotated[int, Query(ge=1, le=200)] = 50) -> JobList:
    """The latest jobs (newest first): status, model, queue and run time, cache outcome."""
    return JobList(jobs=[JobView.of(r) for r in store.recent(None, limit)])


@router.get("/{job_id}", response_model=JobView, responses={404: {"model": ErrorBody}})
def get_job(job_id: str, store: StoreDep) -> JobView:
    record = store.get(job_id)
    if record is None:
        raise ApiError(404, "not_found", f"no job {job_id!r} (unknown, or expired)", field="job_id")
    return JobView.of(record)


@router.get(
    "/{job_id}/annotated.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 404: {"model": ErrorBody}},
)
def get_annotated(job_id: str, store: StoreDep) -> Response:
    """The detect job's image with its boxes and labels drawn."""
    data = store.get_artifact(job_id, "annotated.png")
    if data is None:
        raise ApiError(404, "not_found", f"job {job_id!r} has no annotated image (not a finished detect job)")
    return Response(data, media_type="image/png")


@router.get(
    "/{job_id}/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}, 404: {"model": ErrorBody}},
)
async def job_events(job_id: str, services: ServicesDep,
                     last_event_id: Annotated[str | None, Header()] = None) -> EventSourceResponse:
    """Server-Sent Events: each status change, `text` pieces of generative output, then the end.

    Reconnect with `Last-Event-ID` to resume after the last event seen. A finished job's stream
    replays and closes.
    """
    record = await run_in_threadpool(services.store.get, job_id)
    if record is None:
        raise ApiError(404, "not_found", f"no job {job_id!r} (unknown, or expired)", field="job_id")
    after = last_event_id if last_event_id and _STREAM_ID.match(last_event_id) else "0"

    async def stream():
        if record.status.final and not await services.aredis.exists(EVENTS.format(job_id)):
            yield ServerSentEvent(json.dumps({"status": record.status.value}), event=record.status.value)
            return
        async for event in follow(services.aredis, job_id, after):
            if event is not None:
                yield ServerSentEvent(json.dumps(event.data), event=event.event, id=event.id)

    return EventSourceResponse(stream(), ping=15)


@router.post("/{job_id}/cancel", response_model=JobView, responses={404: {"model": ErrorBody}})
def cancel_job(job_id: str, store: StoreDep) -> JobView:
    """A queued job never runs; a running generative job stops at its next token. Idempotent:
    a job already final is returned as it is."""
    record = store.get(job_id)
    if record is None:
        raise ApiError(404, "not_found", f"no job {job_id!r} (unknown, or expired)", field="job_id")
    for child in record.children.values():
        store.cancel(child, "canceled by the client")
    store.cancel(job_id, "canceled by the client")
    return JobView.of(store.get(job_id))
