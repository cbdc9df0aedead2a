"""/v1/jobs: submit a job, read it, fetch what it produced."""

from __future__ import annotations

import json
import logging
import mimetypes
import re
import time
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sse_starlette.sse import EventSourceResponse, ServerSentEvent

from vlmq.api.auth import owned, spend
from vlmq.api.cancel import cancel
from vlmq.api.deps import CallerDep, ServicesDep, StoreDep
from vlmq.api.errors import ApiError
from vlmq.api.events import follow, replay
from vlmq.api.headers import parse_duration, parse_prefer_wait
from vlmq.api.idempotency import Idempotency, body_hash
from vlmq.api.intake import read_submission
from vlmq.api.schemas import DeliveryList, ErrorBody, JobList, JobView
from vlmq.api.services import Services
from vlmq.api.submit import Delivery, submit_one
from vlmq.blobs import artifact_name, delete_quietly, owned_images
from vlmq.jobs import JobRecord, JobStatus, Lane, now
from vlmq.keyspace import DELIVERIES
from vlmq.store import aget

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
log = logging.getLogger("vlmq.api")
_STREAM_ID = re.compile(r"^\d+-\d+$")

ERRORS = {
    400: {"model": ErrorBody, "description": "Malformed JSON."},
    413: {"model": ErrorBody, "description": "Body or image too large."},
    415: {"model": ErrorBody, "description": "Neither JSON nor multipart."},
    409: {"model": ErrorBody, "description": "Idempotency-Key reused with another body, or in progress."},
    429: {"model": ErrorBody, "description": "Rate limit or full queue; retry after Retry-After seconds."},
}

@router.post(
    "",
    status_code=202,
    response_model=JobView,
    responses={**ERRORS, 200: {"model": JobView, "description": "Final already (Prefer: wait, cache, replay)."}},
    summary="Submit a job",
)
async def submit_job(
    request: Request,
    response: Response,
    services: ServicesDep,
    caller: CallerDep,
) -> JobView:
    """Validate, store the image, queue; answers at once with the job (202)."""
    headers = request.headers  # Prefer, Idempotency-Key, Cancel-After (api/headers.py says why not parameters)
    prefer, idempotency_key, cancel_after = (headers.get(h) for h in ("prefer", "idempotency-key", "cancel-after"))
    await spend(caller, services)
    wait_s = parse_prefer_wait(prefer)
    job_request, upload, raw = await read_submission(request, services.settings)
    deadline_s = job_request.cancel_after
    if cancel_after is not None:  # present, even empty: it must be a duration
        deadline_s = parse_duration(cancel_after, "Cancel-After")
    delivery = Delivery(
        owner=caller.owner,
        lane=job_request.priority or Lane.interactive,
        deadline=now() + deadline_s if deadline_s else None,
        webhook=job_request.webhook,
        webhook_events=tuple(job_request.webhook_events_filter),
    )
    idempotency = Idempotency(services.aredis, services.settings.idempotency_ttl_s)
    if idempotency_key is not None:
        digest = body_hash({**raw, "cancel_after_header": cancel_after}, upload)
        replayed = await idempotency.begin(caller.owner, idempotency_key, digest)
        if replayed is not None:
            record = owned(await aget(services.aredis, replayed), caller, replayed)
            response.status_code = 200
            response.headers["Idempotent-Replayed"] = "true"
            return JobView.of(record)
    try:
        submitted = await submit_one(services, job_request, upload, delivery)
    except BaseException:
        if idempotency_key is not None:
            await idempotency.abandon(caller.owner, idempotency_key)
        raise
    record = submitted.record
    if idempotency_key is not None:
        await idempotency.complete(caller.owner, idempotency_key, digest, record.id)
    log.info("job %s accepted: %s on %s, cache %s", record.id, record.type.value, record.model or "a fan-out",
             record.cache.value, extra={"job_id": record.id})
    response.headers["Location"] = f"/v1/jobs/{record.id}"
    if wait_s:
        async for _event in follow(services.aredis, record, until=time.monotonic() + wait_s):
            pass
        record = await aget(services.aredis, record.id) or record
        response.headers["Preference-Applied"] = f"wait={wait_s}"
    if record.status.final:
        response.status_code = 200
        return JobView.of(record)
    if wait_s:
        return JobView.of(record, await run_in_threadpool(services.place, record))
    return JobView.of(record, (submitted.position, submitted.eta_s))


@router.get("", response_model=JobList)
def list_jobs(store: StoreDep, caller: CallerDep, limit: Annotated[int, Query(ge=1, le=200)] = 50) -> JobList:
    """The caller's latest jobs (newest first): status, model, queue and run time, cache outcome."""
    return JobList(jobs=[JobView.of(r) for r in store.recent(caller.owner, limit)])


@router.get("/{job_id}", response_model=JobView, responses={404: {"model": ErrorBody}})
async def get_job(job_id: str, services: ServicesDep, caller: CallerDep) -> JobView:
    """The job; while queued, with its position in its lane and an estimated wait."""
    record = owned(await aget(services.aredis, job_id), caller, job_id)  # a poll: one read, on the event loop
    if record.status is JobStatus.queued:
        return await run_in_threadpool(_queued_view, services, record)
    return JobView.of(record)


def _queued_view(services: Services, record: JobRecord) -> JobView:
    """A queued job's view with its place (blocking reads); aborted first if its deadline passed."""
    store = services.store
    if record.deadline is not None and now() >= record.deadline:
        if store.cancel(record.id, "its deadline passed before it started", JobStatus.aborted):
            services.lanes.left(record)
            delete_quietly(services.blobs, *owned_images(record))
        record = store.get(record.id) or record
    if record.status is JobStatus.queued:
        return JobView.of(record, services.place(record))
    return JobView.of(record)


@router.get(
    "/{job_id}/artifacts/{name:path}",
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "application/octet-stream": {}}}, 404: {"model": ErrorBody}},
)
def get_artifact(job_id: str, name: str, services: ServicesDep, caller: CallerDep) -> Response:
    """A file a finished job made beside its output (its job type's artifacts: a detect job's
    `annotated.png`, ...); `output.artifacts` lists them with their URLs."""
    record = owned(services.store.get(job_id), caller, job_id)
    listed = (record.output or {}).get("artifacts") or {}
    data = None
    if name in listed:
        data = services.blobs.get(artifact_name(job_id, name))
        if data is None and record.cached_from:  # a cache answer: the file of the job that ran
            data = services.blobs.get(artifact_name(record.cached_from, name))
    if data is None:
        have = ", ".join(sorted(listed)) or "none"
        raise ApiError(404, "not_found", f"job {job_id!r} has no artifact {name!r} (it has: {have})")
    return Response(data, media_type=mimetypes.guess_type(name)[0] or "application/octet-stream")


@router.get(
    "/{job_id}/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}, 204: {"description": "A finished job with nothing "
               "left to replay after Last-Event-ID: the stream is over (EventSource stops reconnecting)."},
               404: {"model": ErrorBody}},
)
async def job_events(job_id: str, services: ServicesDep, caller: CallerDep,
                     last_event_id: Annotated[str | None, Header()] = None) -> Response:
    """Server-Sent Events: each status change, `text` pieces of generative output, then the end.

    Reconnect with `Last-Event-ID` to resume after the last event seen (an id that is not a stream
    id, `<ms>-<seq>`, replays from the start). A finished job's stream replays what is left and
    closes; with nothing left it answers 204, which tells a browser's EventSource to stop.
    """
    record = owned(await aget(services.aredis, job_id), caller, job_id)
    after = last_event_id if last_event_id and _STREAM_ID.match(last_event_id) else "0"
    if record.status.final:
        left = await replay(services.aredis, record, after)
        if not left:
            return Response(status_code=204)
        return EventSourceResponse(
            ServerSentEvent(json.dumps(event.data), event=event.event, id=event.id) for event in left
        )

    async def stream():
        async for event in follow(services.aredis, record, after):
            if event is not None:
                yield ServerSentEvent(json.dumps(event.data), event=event.event, id=event.id)

    return EventSourceResponse(stream(), ping=15)


@router.post("/{job_id}/cancel", response_model=JobView, responses={404: {"model": ErrorBody}})
def cancel_job(job_id: str, services: ServicesDep, caller: CallerDep) -> JobView:
    """A queued job never runs; a running generative job stops at its next token. Idempotent:
    a job already final is returned as it is."""
    record = owned(services.store.get(job_id), caller, job_id)
    return JobView.of(cancel(services, record, "canceled by the client"))


@router.get("/{job_id}/deliveries", response_model=DeliveryList, responses={404: {"model": ErrorBody}})
def job_deliveries(job_id: str, services: ServicesDep, caller: CallerDep) -> DeliveryList:
    """Every webhook delivery attempt for this job: event, status code or error, outcome."""
    owned(services.store.get(job_id), caller, job_id)
    raw = services.redis.lrange(DELIVERIES.format(job_id), 0, -1)
    return DeliveryList(deliveries=[json.loads(x) for x in raw])
