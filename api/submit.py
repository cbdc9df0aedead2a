"""Turning a valid request into stored, queued jobs, on the event loop.

A single-model job is one record on its model's queue. A fan-out job (compare) is a parent record
plus one child record per branch, each child on its own model's queue; the children settle the
parent (vlmq/fanout.py).

The least work a correct submit needs: the image is checked (header and structure, vlmq/images.py)
and written to the blob store under the job's id, then one Lua script admits the job(s) to their
lanes, writes the records and pushes the Celery messages (vlmq/admission.py): one Redis round trip,
no thread. A job is either accepted (202) and runs, or refused and never existed: a refused
admission (429), or Redis away (503), deletes the image it had written. Where the cache may answer
(vlmq/api/answers.py) the cache is asked first, and a cache answer writes no image at all.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import redis
from fastapi.concurrency import run_in_threadpool

from vlmq.api.answers import CachedRequest
from vlmq.api.errors import ApiError
from vlmq.api.intake import load_image
from vlmq.api.services import Services
from vlmq.blobs import adelete_quietly, image_name
from vlmq.images import CheckedImage
from vlmq.jobs import (
    CacheOutcome,
    JobRecord,
    JobStatus,
    Lane,
    new_job_id,
    now,
    request_params,
)
from vlmq.jobtypes import FanOutParams, JobType, Params
from vlmq.lanes import LaneFull
from vlmq.registry import Registry
from vlmq.safe_http import UnsafeURL, check_url


@dataclass(frozen=True)
class Delivery:
    """How a job is delivered and to whom, besides what it computes."""

    owner: str
    lane: Lane = Lane.interactive
    deadline: float | None = None
    webhook: str | None = None
    webhook_events: tuple[str, ...] = ()
    batch: str | None = None  # an OpenAI-style batch (api/openai_batches.py) counting the job's end


@dataclass(frozen=True)
class Submitted:
    """The job a submit created (or the cache's answer), and a queued job's place in its lane."""

    record: JobRecord
    position: int | None = None
    eta_s: float | None = None


def check_models(request, registry: Registry, field_prefix: str = "") -> None:
    """Unknown models, and models that cannot run the job type, are 422s naming the field."""
    if isinstance(request, FanOutParams):
        for i, (name, params) in enumerate(request.branches()):
            _check_one(registry, name, params.type, f"{field_prefix}models.{i}")
        return
    _check_one(registry, request.model, JobType(request.type), f"{field_prefix}model")


def _check_one(registry: Registry, name: str, task: JobType, field: str) -> None:
    if name not in registry:
        raise ApiError(422, "unknown_model", f"{field}: unknown model {name!r}; see GET /v1/models", field=field)
    spec = registry.get(name)
    if task not in spec.tasks:
        runs = ", ".join(map(str, spec.tasks))
        raise ApiError(422, "model_cannot_run", f"{field}: model {name!r} runs {runs}, not {task}", field=field)


async def check_webhook(url: str | None, services: Services, field: str = "webhook") -> None:
    """A webhook must be a public http(s) URL (its host resolved: blocking, so in a thread)."""
    if url is None:
        return
    try:
        await run_in_threadpool(check_url, url, services.settings.url_allow_hosts, field=field)
    except UnsafeURL as exc:
        raise ApiError(422, exc.code, exc.message, field=field) from exc


async def _queue_full(services: Services, full: LaneFull) -> ApiError:
    """Backpressure, per lane: 429 with a Retry-After: when the lane will have room, estimated like a
    queued job's start (vlmq/lanes.py)."""
    batch_size = services.registry.get(full.model).max_batch_size
    wait = await run_in_threadpool(services.lanes.wait_for, full.model, full.depth - full.limit, batch_size)
    retry = max(1, min(300, math.ceil(wait))) if wait is not None else 10
    return ApiError(429, "queue_full", str(full), headers={"Retry-After": str(retry)})


def _record(params: Params, model: str | None, image: str | None, cache: CacheOutcome, delivery: Delivery,
            parent: str | None = None, children: dict[str, str] | None = None, job_id: str | None = None
            ) -> JobRecord:
    top_level = parent is None
    return JobRecord(
        id=job_id or new_job_id(),
        type=JobType(params.type),
        status=JobStatus.queued,
        params=params.model_dump(mode="json"),
        model=model,
        image=image,
        created_at=now(),
        parent=parent,
        children=children or {},
        cache=cache,
        owner=delivery.owner,
        lane=delivery.lane,
        deadline=delivery.deadline,
        webhook=delivery.webhook if top_level else None,
        webhook_events=delivery.webhook_events if top_level else (),
        batch=delivery.batch,
    )


async def _admit(services: Services, records: list[JobRecord], queued: list[JobRecord], blob: str,
                 counters: tuple[str, ...] = ()) -> Submitted:
    """Admit, store and queue (one script); on refusal nothing remains, the image included."""
    limits = {r.id: services.registry.get(r.model).queue_limit for r in queued}
    batch_size = services.registry.get(queued[0].model).max_batch_size if len(queued) == 1 else 1
    try:
        admitted = await services.admission.submit(records, limits, batch_size, counters)
    except LaneFull as full:
        await adelete_quietly(services.blobs, blob)
        raise await _queue_full(services, full) from full
    except (redis.RedisError, OSError):
        await adelete_quietly(services.blobs, blob)
        raise
    head = records[0]
    if head.id in admitted.positions:
        return Submitted(head, admitted.positions[head.id], admitted.eta_s[head.id])
    return Submitted(head)


async def create_jobs(services: Services, request, image: CheckedImage, data: bytes,
                      delivery: Delivery, job_id: str | None = None) -> Submitted:
    """The job(s) for a valid request: answered from the cache when it can be, else queued (as
    `job_id` when given: a batch line's id is derived from its place, so a resumed ingest finds it)."""
    params = request_params(request)
    if isinstance(params, FanOutParams):  # one child per branch: not cached as one
        return await _create_fan_out(services, params, data, delivery)
    job_id = job_id or new_job_id()
    blob = image_name(job_id)
    template = _record(params, request.model, blob, CacheOutcome.miss, delivery, job_id=job_id)
    cached = answer = None
    if request.cache and CachedRequest.applies(services, params):
        # the cache's tiers are blocking (Redis, and the semantic tier's embedding): one thread hop
        cached, answer = await run_in_threadpool(CachedRequest.lookup, services, request.model, params, image,
                                                 template)
    if answer is not None:
        return Submitted(answer)
    if cached is None:
        off = dataclasses.replace(template, cache=CacheOutcome.off)
        await services.blobs.aput(blob, data)
        return await _admit(services, [off], [off], blob)
    await services.blobs.aput(blob, data)
    try:
        submitted = await _admit(services, [template], [template], blob, counters=(CacheOutcome.miss.value,))
    except BaseException:
        await run_in_threadpool(cached.forget, template.id)
        raise
    if cached.remembers:
        await run_in_threadpool(cached.remember, template.id)
    return submitted


async def _create_fan_out(services: Services, params: FanOutParams, data: bytes, delivery: Delivery
                          ) -> Submitted:
    parent_id = new_job_id()
    blob = image_name(parent_id)  # the children's one image, deleted when the parent ends
    children = [_record(branch, model, blob, CacheOutcome.off, delivery, parent=parent_id)
                for model, branch in params.branches()]
    parent = _record(params, None, blob, CacheOutcome.off, delivery, children={c.model: c.id for c in children},
                     job_id=parent_id)
    await services.blobs.aput(blob, data)
    return await _admit(services, [parent, *children], children, blob)


async def prepare(services: Services, request, upload: bytes | None) -> tuple[CheckedImage, bytes]:
    """The checks and the image of a request (downloads in a thread); nothing stored yet."""
    check_models(request, services.registry)
    await check_webhook(request.webhook, services)
    return await load_image(request.image_url, upload, services.settings)


async def submit_one(services: Services, request, upload: bytes | None, delivery: Delivery) -> Submitted:
    image, data = await prepare(services, request, upload)
    return await create_jobs(services, request, image, data, delivery)

