"""Publishing jobs to their model's queue through Celery (the API never runs a task itself)."""

from __future__ import annotations

import logging

from celery import Celery
from kombu.exceptions import KombuError

from vlmq.api.errors import ApiError
from vlmq.jobs import JobRecord
from vlmq.tasks.app import publish

log = logging.getLogger("vlmq.api")
# Fail fast when the broker is away: the client gets a 503 and retries, nothing half-accepted.
RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


class JobQueue:
    def __init__(self, celery: Celery) -> None:
        self.celery = celery

    def publish(self, record: JobRecord, priority: int = 0) -> None:
        """To the model's queue for the record's lane, at a priority step (0 is served first)."""
        try:
            publish(self.celery, record, priority, retry=True, retry_policy=RETRY_POLICY)
        except (KombuError, OSError) as exc:
            log.warning("enqueue failed for %s: %s", record.id, exc, extra={"job_id": record.id})
            raise ApiError(
                503, "unavailable", "the queue is unreachable; try again shortly", headers={"Retry-After": "5"}
            ) from exc
