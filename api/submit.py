"""Turning a valid request into stored, queued jobs.

A single-model job is one record on its model's queue. A compare job is a parent record plus
one child record per model, each child on its own model's queue; the children settle the parent
(see `JobStore.settle_parent`). Records are written before anything is published, so a worker
never receives a job it cannot find; a publish that fails removes the records and answers 503,
so a job is either accepted (202) and runs, or refused and never existed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from vlmq.api.answers import CachedRequest
from vlmq.api.errors import ApiError
from vlmq.api.services import Services
from vlmq.images import DecodedImage
from vlmq.jobs import (
    CacheOutcome,
    CompareRequest,
    JobRecord,
    JobStatus,
    Lane,
    new_job_id,
    now,
    request_params,
)
from vlmq.jobtypes import CompareParams, JobType, Params
from vlmq.lanes import LaneFull
from vlmq.registry import Registry
from vlmq.safe_http import UnsafeURL, check_url
from vlmq.store import ANONYMOUS, JOB


@dataclass(frozen=True)
class Delivery:
    """How a job is delivered and to whom, besides what it computes."""

    owner: str
    lane: Lane = Lane.interactive
    deadline: float | None = None
    webhook: str | None = None
    webhook_events: tuple[str, ...] = ()


def check_models(request, registry: Registry, field_prefix: str = "") -> None:
    """Unknown models, and models that cannot run the job type, are 422s naming the field."""
    if isinstance(request, CompareRequest):
        task = request.task.type
        for i, name in enumerate(request.models):
            _check_one(registry, name, task, f"{field_prefix}models.{i}")
        return
    _check_one(registry, request.model, JobType(request.type), f"{field_prefix}model")


def _check_one(registry: Registry, name: str, task: JobType, field: str) -> None:
    if name not in registry:
        raise ApiError(422, "unknown_model", f"{field}: unknown model {name!r}; see GET /v1/models", field=field)
    spec = registry.get(name)
    if task not in spec.tasks:
        runs = ", ".join(t.value for t in spec.tasks)
        raise ApiError(422, "model_cannot_run", f"{field}: model {name!r} runs {runs}, not {task.value}", field=field)


def check_webhook(url: str | None, services: Services, field: str = "webhook") -> None:
    if url is None:
        return
    try:
        check_url(url, services.settings.url_allow_hosts, field=field)
    except UnsafeURL as exc:
        raise ApiError(422, exc.code, exc.message, field=field) from exc


def _queue_full(services: Services, full: LaneFull) -> ApiError:
    """Backpressure, per lane: 429 with a Retry-After: when the lane will have room, estimated like a
    queued job's start (vlmq/lanes.py)."""
    batch_size = services.registry.get(full.model).max_batch_size
    wait = services.lanes.wait_for(full.model, full.depth - full.limit, batch_size)
    retry = max(1, min(300, math.ceil(wait))) if wait is not None else 10
    return ApiError(429, "queue_full", str(full), headers={"Retry-After": str(retry)})


def _release(services: Services, records: list[JobRecord]) -> None:
    for record in records:
        services.lanes.release(record.id, record.model, record.lane, record.owner or ANONYMOUS)


def create_jobs(services: Services, request, image: DecodedImage, image_bytes: bytes, delivery: Delivery) -> JobRecord:
    """The job(s) for a valid request: answered from the cache when it can be, else queued."""
    params = request_params(request)
    services.store.put_image(image.key, image_bytes)
    if isinstance(params, CompareParams):  # fans out to several models: not cached as one
        return _create_compare(services, params, image, CacheOutcome.off, delivery)
    template = _record(params, request.model, image, CacheOutcome.miss, delivery)
    cached = CachedRequest.of(services, request.model, params, image, template) if request.cache else None
    if cached is None:
        off = dataclasses.replace(template, cache=CacheOutcome.off)
        return _store_and_publish(services, [off], [off])[0]
    answer = cached.answer() or cached.claim(template.id)
    if answer is not None:
        return answer
    try:
        record = _store_and_publish(services, [template], [template])[0]
    except Exception:
        cached.forget(template.id)
        raise
    cached.remember(record.id)
    services.metrics.inc("cache_answers", {"tier": CacheOutcome.miss.value})
    return record


def _record(params: Params, model: str | None, image: DecodedImage, cache: CacheOutcome, delivery: Delivery,
            parent: str | None = None, children: dict[str, str] | None = None) -> JobRecord:
    top_level = parent is None
    return JobRecord(
        id=new_job_id(),
        type=JobType(params.type),
        status=JobStatus.queued,
        params=params.model_dump(mode="json"),
        model=model,
        image=image.key,
        created_at=now(),
        parent=parent,
        children=children or {},
        cache=cache,
        owner=delivery.owner,
        lane=delivery.lane,
        deadline=delivery.deadline,
        webhook=delivery.webhook if top_level else None,
        webhook_events=delivery.webhook_events if top_level else (),
    )


def _create_compare(services: Services, params: CompareParams, image: DecodedImage, cache: CacheOutcome,
                    delivery: Delivery) -> JobRecord:
    parent_id = new_job_id()
    children = [_record(params.task, model, image, cache, delivery, parent=parent_id) for model in params.models]
    parent = _record(params, None, image, cache, delivery, children={c.model: c.id for c in children})
    parent = dataclasses.replace(parent, id=parent_id)
    return _store_and_publish(services, [parent, *children], children)[0]


def _store_and_publish(services: Services, records: list[JobRecord], queued: list[JobRecord]) -> list[JobRecord]:
    """Admit the queued records to their lanes, store all, publish the queued ones; the records."""
    records = list(records)
    queued_ids = {r.id for r in queued}
    steps: dict[str, int] = {}
    try:
        for record in records:
            if record.id in queued_ids:
                steps[record.id] = services.lanes.admit(
                    record.id, record.model, record.lane, record.owner or ANONYMOUS,
                    services.registry.get(record.model).queue_limit,
                )
    except LaneFull as full:
        _release(services, [r for r in records if r.id in steps])
        raise _queue_full(services, full) from full
    queued = [r for r in records if r.id in steps]
    services.store.create(*records)
    published: list[JobRecord] = []
    try:
        for record in queued:
            services.queue.publish(record, priority=steps[record.id])
            published.append(record)
    except ApiError:
        services.redis.delete(*(JOB.format(r.id) for r in records))
        _release(services, [r for r in queued if r not in published])
        raise
    pipe = services.redis.pipeline(transaction=False)
    for record in records:
        services.metrics.inc("jobs_submitted", {"type": record.type.value, "model": record.model or ""}, pipe=pipe)
    pipe.execute()
    return records


def prepare(services: Services, request, upload: bytes | None) -> tuple[DecodedImage, bytes]:
    """The checks and the image of a request (blocking: downloads); nothing stored yet."""
    from vlmq.api.intake import load_image

    check_models(request, services.registry)
    check_webhook(request.webhook, services)
    return load_image(request.image_url, upload, services.settings)


def submit_one(services: Services, request, upload: bytes | None, delivery: Delivery) -> JobRecord:
    """Everything after parsing, blocking (downloads, Redis): the routes run it in the thread pool."""
    image, image_bytes = prepare(services, request, upload)
    return create_jobs(services, request, image, image_bytes, delivery)
