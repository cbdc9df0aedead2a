"""Webhook notifications: which job events go out, enqueued on the webhooks queue.

Whoever changes a job's state (a worker, the API on cancel or on a cache answer) calls
`Notifier.job_event`; the delivery itself (signing, retries, the delivery log) is the webhooks
worker's (tasks/webhooks.py), so a slow receiver never holds a model worker.

Events, as a job may filter them (`webhook_events_filter`): `start` (a worker began it), `output`
(its output is set), `completed` (it reached a final status: succeeded, failed, canceled, aborted).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from vlmq.jobs import JobRecord
from vlmq.queues import WEBHOOK_QUEUE

log = logging.getLogger("vlmq.notify")
DELIVER_TASK = "vlmq.webhook.deliver"


class Notifier:
    def __init__(self, send_task: Callable[..., object]) -> None:
        self.send_task = send_task

    def job_event(self, record: JobRecord, event: str) -> None:
        if not record.webhook or event not in record.webhook_events:
            return
        try:
            self.send_task(DELIVER_TASK, args=[record.id, event], queue=WEBHOOK_QUEUE, routing_key=WEBHOOK_QUEUE)
        except Exception as exc:  # noqa: BLE001 - a lost notification must not fail the job
            log.error("webhook %s for job %s not enqueued: %s", event, record.id, exc, extra={"job_id": record.id})

    def final(self, record: JobRecord) -> None:
        """A job reached its final status: `output` (when it has one) then `completed`."""
        if record.output is not None:
            self.job_event(record, "output")
        self.job_event(record, "completed")
