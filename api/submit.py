"""Turning a valid request into stored, queued jobs.

A single-model job is one record on its model's queue. A compare job is a parent record plus
one child record per model, each child on its own model's queue; the children settle the parent
(see `JobStore.settle_parent`). Records are written before anything is published, so a worker
never receives a job it cannot find; a publish that fails removes the records and answers 503,
so a job is either accepted (202) and runs, or refused and never existed.
"""

from __future__ import annotations

import uuid

from vlmq.api.errors import ApiError
from vlmq.api.services import Services
from vlmq.images import DecodedImage
from vlmq.jobs import CacheOutcome, CompareRequest, JobRecord, JobStatus, now, request_params
from vlmq.jobtypes import CompareParams, JobType, Params
from vlmq.registry import Registry
from vlmq.store import JOB


def new_job_id() -> str:
    return uuid.uuid4().hex


def check_models(request, registry: Registry) -> None:
    """Unknown models, and models that cannot run the job type, are 422s naming the field."""
    if isinstance(request, CompareRequest):
        task = request.task.type
        for i, name in enumerate(request.models):
            _check_one(registry, name, task, f"models.{i}")
        return
    _check_one(registry, request.model, JobType(request.type), "model")


def _check_one(registry: Registry, name: str, task: JobType, field: str) -> None:
    if name not in registry:
        raise ApiError(
            422, "unknown_model", f"{field}: unknown model {name!r}; see GET /v1/models", field=field
        )
    spec = registry.get(name)
    if task not in spec.tasks:
        runs = ", ".join(t.value for t in spec.tasks)
        raise ApiError(
            422, "model_cannot_run", f"{field}: model {name!r} runs {runs}, not {task.value}", field=field
        )


def create_jobs(services: Services, request, image: DecodedImage, image_bytes: bytes) -> JobRecord:
    params = request_params(request)
    services.store.put_image(image.key, image_bytes)
    cache = CacheOutcome.miss if request.cache else CacheOutcome.off
    if isinstance(params, CompareParams):
        return _create_compare(services, params, image, cache)
    record = _record(params, request.model, image, cache)
    _store_and_publish(services, record, [record])
    return record


def _record(params: Params, model: str, image: DecodedImage, cache: CacheOutcome, parent: str | None = None) -> JobRecord:
    return JobRecord(
        id=new_job_id(),
        type=JobType(params.type),
        status=JobStatus.queued,
        params=params.model_dump(mode="json"),
        model=model,
        image=image.key,
        created_at=now(),
        parent=parent,
        cache=cache,
    )


def _create_compare(services: Services, params: CompareParams, image: DecodedImage, cache: CacheOutcome) -> JobRecord:
    parent_id = new_job_id()
    children = [_record(params.task, model, image, cache, parent=parent_id) for model in params.models]
    parent = JobRecord(
        id=parent_id,
        type=JobType.compare,
        status=JobStatus.queued,
        params=params.model_dump(mode="json"),
        image=image.key,
        created_at=now(),
        children={child.model: child.id for child in children},
        cache=cache,
    )
    _store_and_publish(services, parent, children, extra=[parent])
    return parent


def _store_and_publish(
    services: Services, answer: JobRecord, queued: list[JobRecord], extra: list[JobRecord] | None = None
) -> None:
    records = [*(extra or []), *queued]
    services.store.create(*records)
    try:
        for record in queued:
            services.queue.publish(record)
    except ApiError:
        services.redis.delete(*(JOB.format(r.id) for r in records))
        raise
