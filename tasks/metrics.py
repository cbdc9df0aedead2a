"""What a worker counts: queue and run time of the jobs it ran, batch sizes, model load time.

Written to Redis through `vlmq.metrics_store` (see there why), read by the API's /metrics.
"""

from __future__ import annotations

import time

from vlmq.jobs import JobRecord
from vlmq.metrics_store import BATCH_BUCKETS, SECONDS_BUCKETS, MetricsStore


class WorkerMetrics:
    def __init__(self, store: MetricsStore) -> None:
        self.store = store

    def batches(self, model: str, groups: list[tuple[int, float]], ended: list[JobRecord], pipe) -> None:
        """A batch's forward passes ((jobs, seconds) each) and the queue and run time of the jobs it
        ended (their final status is counted by the store), added to `pipe`."""
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
