"""/v1/batches: up to `max_batch_jobs` jobs in one request; counts and pages of results.

Each item is validated and accepted on its own: an invalid item is reported with its index and
error, the rest are accepted. Batch jobs go to the bulk lane. Items are checked and their images
fetched concurrently, then queued one by one in the batch's order (so they start in that order).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field, ValidationError

from vlmq.api.auth import spend
from vlmq.api.deps import CallerDep, ServicesDep
from vlmq.api.errors import ApiError, invalid_request
from vlmq.api.intake import REQUEST_ADAPTER, parse_json
from vlmq.api.schemas import ErrorBody
from vlmq.api.submit import Delivery, Submitted, create_jobs, prepare
from vlmq.jobs import JobStatus, Lane, now
from vlmq.keyspace import BATCH
from vlmq.views import JobView

router = APIRouter(prefix="/v1/batches", tags=["batches"])
FETCH_CONCURRENCY = 8  # items whose images are fetched at once (downloads run in threads)


class BatchItemError(BaseModel):
    index: int
    error: dict[str, Any]


class BatchItem(BaseModel):
    index: int
    id: str


class BatchAccepted(BaseModel):
    id: str
    accepted: int
    rejected: int
    jobs: list[BatchItem]
    errors: list[BatchItemError]


class BatchView(BaseModel):
    id: str
    created_at: float
    total: int = Field(..., description="Accepted jobs.")
    counts: dict[str, int] = Field(..., description="Accepted jobs by status.")
    errors: list[BatchItemError] = Field(..., description="Items refused at submission.")
    offset: int
    limit: int
    jobs: list[JobView] = Field(..., description="This page of the accepted jobs, in submission order.")


ItemError = dict[str, Any]


def _error(exc: ApiError) -> ItemError:
    return {"code": exc.code, "message": exc.message, "field": exc.field}


async def _prepare_item(services, caller, item: dict, fetches: asyncio.Semaphore
                        ) -> tuple[Callable[[], Awaitable[Submitted]] | None, ItemError | None]:
    """Validate one item and fetch its image; (a coroutine function that queues it, None) or (None, its
    error)."""
    try:
        request = REQUEST_ADAPTER.validate_python(item)
        deadline = now() + request.cancel_after if request.cancel_after else None
        delivery = Delivery(owner=caller.owner, lane=request.priority or Lane.bulk, deadline=deadline,
                            webhook=request.webhook, webhook_events=tuple(request.webhook_events_filter))
        async with fetches:
            image, data = await prepare(services, request, None)
    except ValidationError as exc:
        return None, _error(invalid_request(exc))
    except ApiError as exc:
        return None, _error(exc)
    return (lambda: create_jobs(services, request, image, data, delivery)), None


async def _accept_all(services, caller, jobs: list[dict]) -> list[tuple[int, str | None, ItemError | None]]:
    fetches = asyncio.Semaphore(FETCH_CONCURRENCY)
    prepared = await asyncio.gather(*(_prepare_item(services, caller, item, fetches) for item in jobs))
    results = []
    for index, (enqueue, error) in enumerate(prepared):  # queued in the batch's order
        if enqueue is not None:
            try:
                results.append((index, (await enqueue()).record.id, None))
                continue
            except ApiError as exc:
                error = _error(exc)
        results.append((index, None, error))
    return results


@router.post("", status_code=202, response_model=BatchAccepted,
             responses={400: {"model": ErrorBody}, 413: {"model": ErrorBody}, 415: {"model": ErrorBody},
                        429: {"model": ErrorBody}})
async def submit_batch(request: Request, services: ServicesDep, caller: CallerDep) -> BatchAccepted:
    """Submit many jobs at once (images as URLs or data URIs). Each item succeeds or fails alone."""
    await spend(caller, services)
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "unsupported_media_type", "send application/json", field="content-type")
    data = parse_json(await request.body(), "body")
    jobs = data.get("jobs") if isinstance(data, dict) else None
    if not isinstance(jobs, list) or not jobs:
        raise ApiError(422, "invalid_request", "jobs: a non-empty list of job requests", field="jobs")
    if set(data) - {"jobs"}:
        raise ApiError(422, "invalid_request", f"{min(set(data) - {'jobs'})}: unknown field")
    limit = services.settings.max_batch_jobs
    if len(jobs) > limit:
        raise ApiError(422, "invalid_request", f"jobs: at most {limit} per batch", field="jobs")
    for index, item in enumerate(jobs):
        if not isinstance(item, dict):
            raise ApiError(422, "invalid_request", f"jobs.{index}: each job must be a JSON object",
                           field=f"jobs.{index}")

    results = await _accept_all(services, caller, jobs)
    accepted = [BatchItem(index=i, id=job_id) for i, job_id, _ in results if job_id]
    errors = [BatchItemError(index=i, error={k: v for k, v in e.items() if v is not None})
              for i, _, e in results if e]
    batch_id = uuid.uuid4().hex
    pipe = services.aredis.pipeline(transaction=False)
    pipe.hset(BATCH.format(batch_id), mapping={
        "owner": caller.owner, "created_at": repr(time.time()),
        "jobs": json.dumps([item.id for item in accepted]),
        "errors": json.dumps([e.model_dump() for e in errors]),
    })
    pipe.expire(BATCH.format(batch_id), services.settings.job_ttl_s)
    await pipe.execute()
    return BatchAccepted(id=batch_id, accepted=len(accepted), rejected=len(errors), jobs=accepted, errors=errors)


@router.get("/{batch_id}", response_model=BatchView, responses={404: {"model": ErrorBody}})
def get_batch(batch_id: str, services: ServicesDep, caller: CallerDep,
              offset: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=500)] = 100) -> BatchView:
    """Counts by status over the whole batch, and one page of its jobs."""
    raw = services.redis.hgetall(BATCH.format(batch_id))
    data = {k.decode(): v.decode() for k, v in raw.items()}
    if not data or data.get("owner") != caller.owner:
        raise ApiError(404, "not_found", f"no batch {batch_id!r} (unknown, or expired)", field="batch_id")
    ids = json.loads(data["jobs"])
    statuses = services.store.statuses(ids)
    counts = Counter(s or "expired" for s in statuses)
    page = [r for r in services.store.get_many(ids[offset: offset + limit]) if r is not None]
    return BatchView(
        id=batch_id, created_at=float(data["created_at"]), total=len(ids),
        counts={status.value: counts.get(status.value, 0) for status in JobStatus} | (
            {"expired": counts["expired"]} if counts.get("expired") else {}),
        errors=[BatchItemError(**e) for e in json.loads(data["errors"])],
        offset=offset, limit=limit, jobs=[JobView.of(r) for r in page],
    )
