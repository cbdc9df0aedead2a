"""Names on the broker: two queues (lanes) per model, one Celery task per (job type, model).

Each model has an `interactive` lane and a `bulk` lane: `vlmq.<model>.interactive` and
`vlmq.<model>.bulk`. A worker consumes both, interactive first (kombu's `priority` queue order:
every fetch looks at the interactive lane before the bulk lane), so a waiting interactive job is
always the next one taken, micro-batches included. Inside a queue, kombu keeps one Redis list per
priority step; the bulk lane uses them for fair share between API keys (vlmq/lanes.py).
Flower shows task names such as `vlmq.caption.blip-base`.
"""

from __future__ import annotations

from vlmq.jobs import Lane
from vlmq.jobtypes import JobType

TASK_PREFIX = "vlmq."
WEBHOOK_QUEUE = "vlmq.webhooks"
#: kombu's Redis priority steps: one list per step, served 0 first.
PRIORITY_STEPS = tuple(range(10))
KOMBU_SEP = "\x06\x16"


def queue_name(model: str, lane: Lane = Lane.interactive) -> str:
    return f"vlmq.{model}.{lane.value}"


def worker_queues(model: str) -> list[str]:
    """A worker's queues, in the order it serves them."""
    return [queue_name(model, Lane.interactive), queue_name(model, Lane.bulk)]


def queue_keys(model: str, lane: Lane) -> list[str]:
    """The Redis lists holding a lane's messages (one per priority step)."""
    base = queue_name(model, lane)
    return [base] + [f"{base}{KOMBU_SEP}{step}" for step in PRIORITY_STEPS[1:]]


def task_name(job_type: JobType, model: str) -> str:
    return f"{TASK_PREFIX}{job_type.value}.{model}"
