"""Names on the broker: two queues (lanes) per model, one Celery task per (job type, model).

Each model has an `interactive` lane and a `bulk` lane: `vlmq.<model>.interactive` and
`vlmq.<model>.bulk`. A worker consumes both, interactive first (kombu's `priority` queue order:
every fetch looks at the interactive lane before the bulk lane), so a waiting interactive job is
always the next one taken, micro-batches included. Inside a queue, kombu keeps one Redis list per
priority step; the bulk lane uses them for fair share between API keys (vlmq/lanes.py).
Flower shows task names such as `vlmq.caption.blip-base`.
"""

from __future__ import annotations

import base64
import json
import uuid

from vlmq.jobs import JobRecord, Lane
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
    return f"{TASK_PREFIX}{job_type}.{model}"


def task_message(record: JobRecord) -> str:
    """The Celery task message (protocol 2) for a job, as kombu's Redis transport stores it in a
    queue list: what `send_task(task_name, args=[job id], task_id=job id, queue, priority)` pushes,
    built without kombu (the API pushes it from its admission script, vlmq/admission.py), and cut to
    what Celery's worker and kombu read (every other header has its default): ~360 bytes instead of
    ~850, for Redis memory per queued job. Compact JSON in a fixed key order: the admission script
    rewrites `"priority":0,` for a fair-share step."""
    assert record.model is not None
    queue = queue_name(record.model, record.lane)
    body = base64.b64encode(f'[["{record.id}"],{{}},{{}}]'.encode()).decode()
    message = {
        "body": body,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"task": task_name(record.type, record.model), "id": record.id},
        "properties": {
            "delivery_info": {"exchange": "", "routing_key": queue}, "priority": 0,
            "body_encoding": "base64", "delivery_tag": uuid.uuid4().hex,
        },
    }
    return json.dumps(message, separators=(",", ":"))
