"""The worker loop's body: take a batch of delivered jobs, run them on the adapter, record results.

For each batch the runner:
1. claims every job in the store (`JobStore.start`): a job that is already final (canceled,
   finished by an earlier delivery) or whose deadline passed is not run; an attempt past
   `max_attempts` fails;
2. loads each image by its content key and parses the params;
3. groups the jobs by the adapter's `batch_key` and runs each group as one `predict` call;
   a group that raises is re-run one job at a time, so one bad job fails alone;
4. checks that outputs match inputs one to one and validate against the job type's schema;
5. writes each result fenced by its attempt, renders the annotated image of detect jobs, and
   settles the parent of compare children.
Only then does the batch return, and Celery acknowledges its messages (late acks).
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import redis
import torch
from pydantic import ValidationError

from vlmq.images import ImageError, decode_image
from vlmq.jobs import JobRecord, JobStatus, now
from vlmq.jobtypes import GENERATIVE, OUTPUTS, DetectOutput, JobType, parse_params
from vlmq.lanes import Lanes
from vlmq.notify import Notifier
from vlmq.settings import Settings
from vlmq.store import JobStore
from vlmq.tasks.adapters.base import GenerationHooks, ItemError, ModelAdapter, WorkItem
from vlmq.tasks.annotate import render_boxes
from vlmq.tasks.metrics import WorkerMetrics

log = logging.getLogger("vlmq.worker")
CANCEL_POLL_S = 0.05
EXIT_REDIS_LOST = 75


@dataclass(frozen=True)
class Claimed:
    record: JobRecord
    attempt: int
    item: WorkItem


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
        settings: Settings,
        worker_name: str,
        metrics: WorkerMetrics | None = None,
        notifier: Notifier | None = None,
        lanes: Lanes | None = None,
    ) -> None:
        self.adapter = adapter
        self.model = adapter.spec.name
        self.store = store
        self.settings = settings
        self.worker_name = worker_name
        self.metrics = metrics
        self.notifier = notifier
        self.lanes = lanes

    # --- entry point ------------------------------------------------------------------------

    def run_batch(self, job_ids: list[str]) -> None:
        try:
            self._run_batch(job_ids)
        except redis.RedisError as exc:
            # Results cannot be recorded. Returning would acknowledge the batch and lose its jobs:
            # exit instead, unacknowledged; Redis redelivers them once it is back (visibility timeout)
            # and the supervisor restarts this worker.
            log.critical("Redis unavailable mid-batch (%s): exiting without acknowledging %d jobs", exc,
                         len(job_ids))
            logging.shutdown()
            os._exit(EXIT_REDIS_LOST)

    def _run_batch(self, job_ids: list[str]) -> None:
        began = time.monotonic()
        if self.lanes:
            self.lanes.batch_started(self.worker_name)
        claimed = [c for c in (self._claim(job_id) for job_id in job_ids) if c is not None]
        groups: dict[Hashable, list[Claimed]] = defaultdict(list)
        for c in claimed:
            groups[(c.record.type, self.adapter.batch_key(c.item))].append(c)
        for group in groups.values():
            self._run_group(group)
        if self.lanes:
            self.lanes.batch_done(self.model, self.worker_name, time.monotonic() - began)

    # --- steps ------------------------------------------------------------------------------

    def _claim(self, job_id: str) -> Claimed | None:
        start = self.store.start(job_id, self.worker_name, self.settings.max_attempts)
        record = self.store.get(job_id)
        if record is not None and self.lanes:
            self.lanes.left(record)  # it left its lane (counted once, whatever the deliveries)
        if start.action != "run":
            log.info("job %s not run: %s %s", job_id, start.action, start.status or "", extra={"job_id": job_id})
            self._after_final(job_id)
            return None
        if record is None:  # expired between the two calls
            return None
        if record.parent:
            self.store.mark_parent_running(record.parent)
        if self.notifier:
            self.notifier.job_event(record, "start")
        try:
            data = self.store.get_image(record.image or "")
            if data is None:
                raise ImageError("image_expired", "the job's image is no longer stored (its TTL passed)")
            image = decode_image(
                data, max_pixels=self.settings.max_image_pixels, max_side=self.settings.max_image_side, with_key=False
            ).image
            params = parse_params(record.params)
        except (ImageError, ValidationError, KeyError, ValueError) as exc:
            self._finish(record, start.attempt, error=error_of(exc))
            return None
        return Claimed(record, start.attempt, WorkItem(job_id=job_id, image=image, params=params))

    def _run_group(self, group: list[Claimed]) -> None:
        items = [c.item for c in group]
        seed = items[0].params.seed
        if seed is not None and items[0].params.sampled:
            torch.manual_seed(seed)
        hooks = self._hooks(group)
        began = time.perf_counter()
        try:
            results = self.adapter.predict(items, hooks)
            if len(results) != len(items):
                raise RuntimeError(f"adapter returned {len(results)} results for {len(items)} jobs")
        except Exception as exc:
            if len(group) > 1:
                log.warning("batch of %d failed (%s); running its jobs one by one", len(group), exc)
                for claimed in group:
                    self._run_group([claimed])
                return
            log.exception("job %s failed", group[0].record.id, extra={"job_id": group[0].record.id})
            results = [exc]
        if self.metrics:
            self.metrics.batch(self.model, len(group), time.perf_counter() - began)
        for claimed, result in zip(group, results, strict=True):
            if isinstance(result, BaseException):
                self._finish(claimed.record, claimed.attempt, error=error_of(result))
            else:
                self._finish_output(claimed, result)

    def _finish_output(self, claimed: Claimed, result: dict) -> None:
        record = claimed.record
        try:
            output = OUTPUTS[record.type].model_validate(result).model_dump(mode="json")
            if record.type is JobType.detect:
                boxes = DetectOutput.model_validate(output).boxes
                self.store.put_artifact(record.id, "annotated.png", render_boxes(claimed.item.image, boxes))
                output["annotated_url"] = f"/v1/jobs/{record.id}/annotated.png"
        except (ValidationError, ValueError) as exc:
            self._finish(record, claimed.attempt, error={"code": "invalid_output", "message": str(exc)[:2000]})
            return
        self._finish(record, claimed.attempt, output=output)

    def _finish(self, record: JobRecord, attempt: int, output: dict | None = None, error: dict | None = None) -> None:
        status = JobStatus.failed if error is not None else JobStatus.succeeded
        written = self.store.finish(record.id, attempt, status, output=output, error=error)
        log.info("job %s %s (attempt %d)", record.id, status.value, attempt,
                 extra={"job_id": record.id, **({"error_code": error["code"]} if error else {})})
        if not written:
            log.info("job %s result dropped: no longer running as attempt %d", record.id, attempt,
                     extra={"job_id": record.id})
        elif self.metrics:
            self.metrics.finished(record)
        self._after_final(record.id)

    def cancel(self, job_id: str, reason: str) -> None:
        """Cancel a job that is not final (revoked from Flower): as the API's cancel does, with its
        lane, webhooks, joiners and compare parent."""
        record = self.store.get(job_id)
        if record is None or record.status.final:
            return
        if self.store.cancel(job_id, reason) == JobStatus.canceled.value:
            log.info("job %s canceled: %s", job_id, reason, extra={"job_id": job_id})
            if self.lanes:
                self.lanes.left(record)
            self._after_final(job_id)

    def _after_final(self, job_id: str) -> None:
        """Once a job is final: its webhooks, and its compare parent's settlement."""
        record = self.store.get(job_id)
        if record is None or not record.status.final:
            return
        if self.notifier:
            self.notifier.final(record)
        for joiner_id in self.store.settle_joiners(job_id):
            joiner = self.store.get(joiner_id)
            if joiner is not None and self.notifier:
                self.notifier.final(joiner)
        if record.parent:
            settled = self.store.settle_parent(record.parent, record.model or "", record)
            parent = self.store.get(record.parent) if settled not in ("running", "") else None
            if parent is not None and parent.status.final and self.notifier:
                self.notifier.final(parent)

    # --- hooks: text streaming and cancellation --------------------------------------------

    def _hooks(self, group: list[Claimed]) -> GenerationHooks:
        ids = [c.record.id for c in group]
        on_text: Callable[[int, str], None] | None = None
        if group[0].record.type in GENERATIVE:

            def on_text(row: int, text: str) -> None:
                self.store.emit(ids[row], "text", {"text": text})

        deadlines = [c.record.deadline for c in group]
        state = {"at": 0.0, "stopped": [False] * len(ids)}

        def is_cancelled(row: int) -> bool:
            if time.monotonic() - state["at"] > CANCEL_POLL_S:
                state["at"] = time.monotonic()
                for i, deadline in enumerate(deadlines):
                    if deadline is not None and now() >= deadline:
                        self.store.cancel(ids[i], "its deadline passed while it ran")
                state["stopped"] = [s != JobStatus.running.value for s in self.store.statuses(ids)]
            return state["stopped"][row]

        return GenerationHooks(on_text=on_text, is_cancelled=is_cancelled)
