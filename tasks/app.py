"""The Celery app: broker settings, delivery guarantees, routing. Light: no torch import here.

Delivery (see docs/architecture.md, "Delivery guarantees"):
- `task_acks_late` + `task_reject_on_worker_lost`: a job is acknowledged only after its result is
  written; a worker that dies mid-job leaves the message unacknowledged and Redis redelivers it
  after `visibility_timeout_s` (kept longer than the longest job).
- A redelivered job runs again under a new attempt number; the store fences writes by attempt,
  so one final result is recorded, and `max_attempts` bounds a job that kills its worker.
- No result backend: job records in the store are the results (`task_ignore_result`).
"""

from __future__ import annotations

from celery import Celery

from vlmq.jobs import JobRecord
from vlmq.queues import PRIORITY_STEPS, queue_name, task_name
from vlmq.redis_conn import broker_options
from vlmq.settings import Settings


def make_celery(settings: Settings) -> Celery:
    broker = settings.redis_url
    if settings.redis_password and "@" not in broker:
        broker = broker.replace("://", f"://:{settings.redis_password.get_secret_value()}@", 1)
    app = Celery("vlmq", broker=broker, set_as_current=False)
    app.conf.update(
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        worker_send_task_events=True,  # Flower sees received / started / succeeded per task
        task_send_sent_event=False,  # a second Redis PUBLISH per submit: the job record has created_at
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            # sweep for unacknowledged jobs of dead workers a few times per visibility timeout
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout_s // 4)),
            "unacked_restore_throttle": 1,
            "priority_steps": list(PRIORITY_STEPS),
            "queue_order_strategy": "priority",  # a worker's queues in order: interactive lane first
            "socket_connect_timeout": 2,
            "socket_timeout": 10,
            "retry_on_timeout": True,
            "health_check_interval": 15,
            **broker_options(settings),
        },
        task_default_queue="vlmq.default",
    )
    return app


def publish(app: Celery, record: JobRecord, priority: int = 0, **options) -> None:
    """Send a job to its model's queue for its lane: the message carries only the job id."""
    assert record.model is not None
    queue = queue_name(record.model, record.lane)
    app.send_task(task_name(record.type, record.model), args=[record.id], task_id=record.id, queue=queue,
                  routing_key=queue, priority=priority, **options)
