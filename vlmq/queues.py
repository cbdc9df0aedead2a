"""Names on the broker: one queue per model, one Celery task per (job type, model).

Workers consume only their model's queue (`celery worker -Q`); the API routes each job there by
name. Flower shows task names such as `vlmq.caption.blip-base`.
"""

from __future__ import annotations

from vlmq.jobtypes import JobType

QUEUE_PREFIX = "vlmq.model."
TASK_PREFIX = "vlmq."
WEBHOOK_QUEUE = "vlmq.webhooks"


def queue_name(model: str) -> str:
    return f"{QUEUE_PREFIX}{model}"


def task_name(job_type: JobType, model: str) -> str:
    return f"{TASK_PREFIX}{job_type.value}.{model}"
