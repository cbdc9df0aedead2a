"""The worker loop's body: take a batch of delivered jobs, run them on the adapter, record results.

A worker runs two batches at once (a two-thread pool): while one is in the model, the next one is
prepared, so the model waits for no Redis round trip, image read, JPEG decode or processor. Each
batch goes through three steps:

1. before the model (overlapping the batch in it): its records are read (nothing changes: a job
   waiting here is still `queued`, in its lane), its images read from the blob store and decoded,
   its params parsed, its jobs grouped by the adapter's `batch_key`, and `adapter.prepare` (the
   processor) run per group;
2. with the model (`ModelGate`, one forward pass at a time): the whole batch is claimed in one
   script (`JobStore.claim`): each job leaves its lane and starts (`running`, attempt counted), or
   not (final meanwhile, deadline passed: aborted, attempts exhausted: failed); then each group's
   `adapter.predict`. A row whose job was not claimed is stopped at once and dropped. A group that
   raises is re-run one job at a time, so one bad job fails alone;
3. after it (overlapping the next batch's forward pass): outputs checked one to one against the
   inputs and validated against the job type's schema, detect jobs' annotated images written to the
   blob store, and the batch's results written in one script (`JobStore.finish_batch`), each fenced
   by its attempt, with the text still to stream, settling joined jobs and compare parents; then
   webhooks, the images no job needs any more, counters.

Only then does the batch return, and Celery acknowledges its messages (late acks). Token streaming
and cancellation go through `LiveJobs` (tasks/live.py): no Redis round trip inside `generate`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import defaultdict
from collections.abc import Hashable
from dataclasses import dataclass

import redis
import torch
from pydantic import ValidationError

from vlmq.blobs import BlobStore, artifact_name, delete_quietly, image_name, owned_images
from vlmq.images import ImageError, decode_image
from vlmq.jobs import JobRecord, JobStatus, now
from vlmq.jobtypes import job_type, parse_params
from vlmq.lanes import Lanes
from vlmq.notify import Notifier
from vlmq.settings import Settings
from vlmq.store import Claim, Finished, JobStore, Result
from vlmq.tasks.adapters.base import GenerationHooks, ItemError, ModelAdapter, WorkItem
from vlmq.tasks.batching import ModelGate
from vlmq.tasks.live import LiveJobs
from vlmq.tasks.metrics import BatchStages, WorkerMetrics
from vlmq.views import artifact_url

log = logging.getLogger("vlmq.worker")
EXIT_REDIS_LOST = 75
DEADLINE_WHILE_RUNNING = "its deadline passed while it ran"


@dataclass(frozen=True)
class JobReport:
    """What became of one delivered job in this batch (what Flower shows, tasks/flower.py):
    `status` its final status here (None: not run, or its result was fenced out), `detail` the
    error (`code: message`), the cancel reason, or why it was not run."""

    status: str | None
    detail: str = ""


def error_of(exc: BaseException) -> dict[str, str]:
    code = getattr(exc, "code", None) or "model_error"
    message = str(exc) or exc.__class__.__name__
    if not isinstance(exc, (ItemError, ImageError)):
        message = f"{exc.__class__.__name__}: {message}"
    return {"code": code, "message": message[:2000]}


class ModelRunner:
    def __init__(
        self,
        adapter: ModelAdapter,
        store: JobStore,
        blobs: BlobStore,
        settings: Settings,
        worker_name: str,
        metrics: WorkerMetrics | None = None,
        notifier: Notifier | None = None,
        lanes: Lanes | None = None,
        live: LiveJobs | None = None,
        gate: ModelGate | None = None,
        loaded: tuple[float, float] | None = None,
    ) -> None:
        self.adapter = adapter
        self.model = adapter.spec.name
        self.store = store
        self.blobs = blobs
        self.settings = settings
        self.worker_name = worker_name
        self.metrics = metrics
        self.notifier = notifier
        self.lanes = lanes
        self.live = live or LiveJobs(store, worker_name)
        self.gate = gate or ModelGate()  # one forward pass at a time; everything else overlaps
        self.loaded = loaded  # (began, ended): when this worker loaded the weights (wall clock)
        self._input_size = adapter.input_size()  # after setup: the processor says

    # --- entry point ------------------------------------------------------------------------

    def run_batch(self, job_ids: list[str]) -> list[JobReport]:
        """Run the delivered jobs; what became of each, in order."""
        try:
            return self._run_batch(job_ids)
        except redis.RedisError as exc:
            # Results cannot be recorded. Returning would acknowledge the batch and lose its jobs:
            # exit instead, unacknowledged; Redis redelivers them once it is back (visibility timeout)
            # and the supervisor restarts this worker.
            log.critical("Redis unavailable mid-batch (%s): exiting without acknowledging %d jobs", exc,
                         len(job_ids))
            logging.shutdown()
            os._exit(EXIT_REDIS_LOST)

    def _run_batch(self, job_ids: list[str]) -> list[JobReport]:
        began = time.perf_counter()
        stages = BatchStages()
        # 1. Before the model (overlapping the batch in it): read the records (nothing changes yet: a
        #    job waiting here is still queued, in its lane), images and params, the processor.
        loaded: dict[str, WorkItem | dict] = {}
        for record in self.store.get_many(job_ids):
            if record is not None and not record.status.final:
                loaded[record.id] = self._load(record)
        stages.images = time.perf_counter() - began
        groups: dict[Hashable, list[WorkItem]] = defaultdict(list)
        for item in loaded.values():
            if isinstance(item, WorkItem):
                groups[(item.params.type, self.adapter.batch_key(item))].append(item)
        prepared = [(items, self._prepare(items)) for items in groups.values()]
        ready = time.perf_counter()
        stages.preprocess = ready - began - stages.images
        self.gate.prepared(ready - began)
        # 2. With the model: claim the batch (now running, or not: final, deadline passed...), then
        #    the forward passes of what was claimed.
        reports: dict[str, JobReport] = {}
        results: list[Result] = []
        timings: list[tuple[int, float]] = []
        with self.gate.predicting(job_ids[0] if job_ids else None) as model_idle_since:
            acquired = time.perf_counter()
            # the model had nothing to run while this batch was still loading its images
            stages.model_waited = max(0.0, acquired - max(began, model_idle_since or acquired))
            self.live.busy(time.time())
            try:
                claims = self.store.claim(job_ids, self.worker_name, self.settings.max_attempts)
                stages.claim = time.perf_counter() - acquired
                claimed = {c.job_id: c for c in claims if c.action == "run" and c.record is not None}
                for claim in claims:
                    if claim.job_id not in claimed:
                        reports[claim.job_id] = self._not_run(claim)
                    elif not isinstance(loaded.get(claim.job_id), WorkItem):  # its image or params failed
                        error = loaded.get(claim.job_id) or {"code": "model_error", "message": "not loaded"}
                        results.append(Result(claim.job_id, claim.attempt, JobStatus.failed, error=error))
                for claim in claimed.values():
                    if self.notifier:
                        self.notifier.job_event(claim.record, "start")
                self.store.note_load_waits(self._load_waits(claimed.values()))
                self.live.watch({c.job_id: c.record.deadline for c in claimed.values()})
                try:
                    for items, batch in prepared:
                        if any(item.job_id in claimed for item in items):
                            results += self._run_group(items, batch, claimed, timings)
                finally:
                    texts = self.live.take(list(claimed))
            finally:
                self.live.busy(None)
        # 3. After it (overlapping the next batch's forward pass): the results, in one round trip.
        results = [dataclasses.replace(r, text=texts.get(r.job_id, "")) for r in results]
        finishing = time.perf_counter()
        stages.generate = sum(seconds for _n, seconds in timings)
        finished = self.store.finish_batch(results)
        stages.finish = time.perf_counter() - finishing
        self._after({c.job_id: c.record for c in claims if c.record is not None}, results, finished, timings=timings,
                    stages=stages)
        for result, done in zip(results, finished, strict=True):
            reports[result.job_id] = _report(result) if done.written else JobReport(None, "result dropped: "
                                                                                  "no longer running as this attempt")
        return [reports.get(job_id, JobReport(None, "not run: no such job")) for job_id in job_ids]

    # --- steps ------------------------------------------------------------------------------

    def _load(self, record: JobRecord) -> WorkItem | dict:
        """A delivered job's image (from the blob store) and params, or the error that fails it."""
        try:
            data = self.blobs.get(record.image) if record.image else None
            if data is None:
                raise ImageError("image_expired", "the job's image is no longer stored (its job ended, or "
                                                  "it outlived job_ttl_s)")
            # full_image (detect: boxes and the annotated image in the original's pixels); others: what the model needs
            image = decode_image(data, max_pixels=self.settings.max_image_pixels, max_side=self.settings.max_image_side,
                                 at_least=None if job_type(record.type).full_image else self._input_size)
            params = parse_params(record.params)
        except (ImageError, ValidationError, KeyError, ValueError) as exc:
            return error_of(exc)
        return WorkItem(job_id=record.id, image=image, params=params)

    def _load_waits(self, claims) -> dict[str, float]:
        """Jobs that arrived before the weights were loaded: how long each waited for the load."""
        if self.loaded is None:
            return {}
        began, ended = self.loaded
        return {c.job_id: ended - max(began, c.record.created_at) for c in claims
                if c.record.created_at < ended and c.record.attempts <= 1}

    def _prepare(self, items: list[WorkItem]) -> object:
        """The adapter's `prepare`, or the exception it raised (the group then runs job by job)."""
        try:
            return self.adapter.prepare(items)
        except Exception as exc:  # noqa: BLE001 - retried job by job, where it fails alone
            return exc

    def _not_run(self, claim: Claim) -> JobReport:
        """A job not run here: already final, missing, or ended at its claim (aborted, failed)."""
        if claim.action == "missing" or claim.record is None:
            return JobReport(None, "not run: no such job")
        if claim.action == "final":
            log.info("job %s not run: already %s", claim.job_id, claim.status, extra={"job_id": claim.job_id})
            return JobReport(None, f"not run: already {claim.status}")
        record = claim.record  # ended here: its lane, webhooks, joiners, parent, image
        log.info("job %s %s at its claim", record.id, record.status.value, extra={"job_id": record.id})
        self._after({record.id: record}, [], [], ended=[(record, self.store.after_final(record))])
        return _report(Result(record.id, claim.attempt, record.status, error=record.error,
                              reason=record.cancel_reason))

    def _run_group(self, items: list[WorkItem], batch: object, claimed: dict[str, Claim],
                   timings: list[tuple[int, float]]) -> list[Result]:
        """One group's forward pass (the model's lock is held); its claimed jobs' results. A row whose
        job was not claimed (final meanwhile) is stopped at once and its output dropped. A group
        that raises runs again job by job."""
        hooks = self._hooks(items, claimed)
        began = time.perf_counter()
        try:
            if isinstance(batch, Exception):
                raise batch
            seed = items[0].params.seed
            if seed is not None and items[0].params.sampled:
                torch.manual_seed(seed)
            outputs = self.adapter.predict(batch, hooks)
            if len(outputs) != len(items):
                raise RuntimeError(f"adapter returned {len(outputs)} results for {len(items)} jobs")
        except Exception as exc:
            if len(items) > 1:
                log.warning("batch of %d failed (%s); running its jobs one by one", len(items), exc)
                return [result for item in items
                        for result in self._run_group([item], self._prepare([item]), claimed, timings)]
            log.exception("job %s failed", items[0].job_id, extra={"job_id": items[0].job_id})
            outputs = [exc]
        timings.append((len(items), time.perf_counter() - began))
        return [self._result(claimed[item.job_id], item, output)
                for item, output in zip(items, outputs, strict=True) if item.job_id in claimed]

    def _result(self, claim: Claim, item: WorkItem, output: dict | BaseException) -> Result:
        record, attempt = claim.record, claim.attempt
        if record.deadline is not None and now() >= record.deadline:
            return Result(record.id, attempt, JobStatus.canceled, reason=DEADLINE_WHILE_RUNNING)
        if isinstance(output, BaseException):
            return Result(record.id, attempt, JobStatus.failed, error=error_of(output))
        spec = job_type(record.type)
        try:
            valid = spec.output.model_validate(output).model_dump(mode="json")
            if spec.artifacts is not None:
                files = spec.artifacts(item.image, valid, item.params)
                for name, data in files.items():
                    self.blobs.put(artifact_name(record.id, name), data)
                valid["artifacts"] = {name: artifact_url(record.id, name) for name in files}
        except (ValidationError, ValueError) as exc:
            return Result(record.id, attempt, JobStatus.failed,
                          error={"code": "invalid_output", "message": str(exc)[:2000]})
        return Result(record.id, attempt, JobStatus.succeeded, output=valid)

    def _after(self, records: dict[str, JobRecord], results: list[Result], finished: list[Finished],
               ended: list[tuple[JobRecord, Finished]] = (), timings: list[tuple[int, float]] = (),
               stages: BatchStages | None = None) -> None:
        """Once results are written: webhooks, images no job needs, joined jobs, compare parents,
        counters (and the model's pace, for wait estimates), in one round trip."""
        done = list(ended)
        for result, fin in zip(results, finished, strict=True):
            if fin.written:
                record = records[result.job_id]
                done.append((dataclasses.replace(record, status=result.status, output=result.output,
                                                 error=result.error, cancel_reason=result.reason), fin))
                log.info("job %s %s (attempt %d)", record.id, result.status.value, result.attempt,
                         extra={"job_id": record.id, **({"error_code": result.error["code"]} if result.error else {})})
            else:
                log.info("job %s result dropped: no longer running as attempt %d", result.job_id, result.attempt,
                         extra={"job_id": result.job_id})
        images = [name for record, _ in done for name in owned_images(record)]
        others = [j for _, fin in done for j in fin.joiners]
        parents = [fin.parent for _, fin in done if fin.parent and fin.parent_status in _FINAL]
        images += [image_name(parent) for parent in parents]
        if images:
            delete_quietly(self.blobs, *images)
        if self.notifier:
            for record, _ in done:
                self.notifier.final(record)
            if others or parents:
                for record in self.store.get_many([*others, *parents]):
                    if record is not None:
                        self.notifier.final(record)
        if timings and (self.metrics or self.lanes):
            pipe = self.store.redis.pipeline(transaction=False)
            if self.metrics:
                self.metrics.batches(self.model, timings, [record for record, _ in done], pipe, stages)
            if self.lanes:
                self.lanes.record_pace(self.model, sum(seconds for _n, seconds in timings), pipe)
            pipe.execute()

    # --- a revoke (Flower) --------------------------------------------------------------------------

    def cancel(self, job_id: str, reason: str) -> None:
        """Cancel a job that is not final (revoked from Flower): as the API's cancel does, with its
        lane, webhooks, joiners, compare parent and image."""
        record = self.store.get(job_id)
        if record is None or record.status.final:
            return
        if self.store.cancel(job_id, reason) == JobStatus.canceled.value:
            log.info("job %s canceled: %s", job_id, reason, extra={"job_id": job_id})
            if self.lanes:
                self.lanes.left(record)
            ended = dataclasses.replace(record, status=JobStatus.canceled, cancel_reason=reason)
            self._after({job_id: ended}, [], [], ended=[(ended, self.store.after_final(ended))])

    # --- hooks: text streaming and cancellation --------------------------------------------

    def _hooks(self, items: list[WorkItem], claimed: dict[str, Claim]) -> GenerationHooks:
        ids = [item.job_id for item in items]
        live = self.live
        streams = job_type(items[0].params.type).streams
        return GenerationHooks(
            on_text=(lambda row, text: live.text(ids[row], text)) if streams else None,
            is_cancelled=lambda row: ids[row] not in claimed or live.cancelled(ids[row]),
        )


_FINAL = frozenset(s.value for s in JobStatus if s.final)


def _report(result: Result) -> JobReport:
    if result.error:
        return JobReport(result.status.value, f"{result.error.get('code', 'error')}: {result.error.get('message', '')}")
    return JobReport(result.status.value, result.reason or "")
