"""What a worker counts: queue and run time of the jobs it ran, batch sizes and where a batch's time
goes, model load time.

Written to Redis through `vlmq.metrics_store` (see there why), read by the API's /metrics.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from vlmq.jobs import JobRecord
from vlmq.metrics_store import BATCH_BUCKETS, SECONDS_BUCKETS, MetricsStore


@dataclass
class BatchStages:
    """Seconds one batch spent in each step (`vlmq_batch_stage_seconds{stage}`). `model_waited`: the
    model was free while this batch was already delivered and still reading its images or running the
    processor (the time a prefetch pipeline exists to hide); the rest are the steps themselves."""

    images: float = 0.0  # job records, image bytes from the blob store, decode
    preprocess: float = 0.0  # the adapter's prepare (processor, tensors)
    model_waited: float = 0.0
    claim: float = 0.0  # the claim script, once the model is free
    generate: float = 0.0  # the forward passes (adapter.predict)
    finish: float = 0.0  # the finish script


class WorkerMetrics:
    def __init__(self, store: MetricsStore) -> None:
        self.store = store

    def batches(self, model: str, groups: list[tuple[int, float]], ended: list[JobRecord], pipe,
                stages: BatchStages | None = None) -> None:
        """A batch's forward passes ((jobs, seconds) each), where its time went, and the queue and run
        time of the jobs it ended (their final status is counted by the store), added to `pipe`."""
        if stages is not None:
            for stage, seconds in dataclasses.asdict(stages).items():
                self.store.observe("batch_stage_seconds", {"model": model, "stage": stage}, seconds,
                                   SECONDS_BUCKETS, pipe=pipe)
        for size, seconds in groups:
            self.store.observe("batch_size", {"model": model}, size, BATCH_BUCKETS, pipe=pipe)
            self.store.observe("batch_seconds", {"model": model}, seconds, SECONDS_BUCKETS, pipe=pipe)
        for record in ended:
            if not record.started_at:
                continue
            labels = {"type": record.type.value, "model": record.model or ""}
            self.store.observe("queue_seconds", labels, record.started_at - record.created_at, SECONDS_BUCKETS, pipe=pipe)
            self.store.observe("run_seconds", labels, time.time() - record.started_at, SECONDS_BUCKETS, pipe=pipe)

    def model_loaded(self, model: str, seconds: float) -> None:
        self.store.set("model_load_seconds", {"model": model}, seconds)
