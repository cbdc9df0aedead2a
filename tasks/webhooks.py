"""Webhook delivery: the `vlmq webhooks` worker, consuming only the webhooks queue.

Each delivery is signed per the Standard Webhooks spec (`standardwebhooks`): headers
`webhook-id` (the same on every retry of one event: `<job id>.<event>`), `webhook-timestamp`
and `webhook-signature`, with the secret of the API key that submitted the job (anonymous jobs:
the service's own secret). The URL passes the same address checks as image URLs, again at
delivery time. A 5xx, 408, 429, timeout or connection error is retried with exponential backoff
and jitter, up to `webhook_max_attempts`; any other 4xx is final. Every attempt is logged in
`vlmq:deliveries:{job id}` (`GET /v1/jobs/{id}/deliveries`).
"""

from __future__ import annotations

import json
import logging
import random
import time
from datetime import UTC, datetime

import httpx
from standardwebhooks.webhooks import Webhook

from vlmq.keys import KeyStore
from vlmq.keyspace import DELIVERIES
from vlmq.notify import DELIVER_TASK
from vlmq.queues import WEBHOOK_QUEUE
from vlmq.redis_conn import sync_client
from vlmq.safe_http import UnsafeURL, check_url, pinned_request
from vlmq.settings import Settings
from vlmq.store import ANONYMOUS, JobStore
from vlmq.tasks.app import make_celery
from vlmq.views import JobView
from vlmq.webhook_secrets import secret_for

log = logging.getLogger("vlmq.webhooks")
RETRY_STATUSES = {408, 429}


def backoff_s(attempt: int, base: float) -> float:
    """Exponential (base, 2 base, 4 base, ...) with full jitter in [50%, 150%], capped at 5 minutes."""
    return min(300.0, base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)


def build_app(settings: Settings):
    app = make_celery(settings)
    client = sync_client(settings)
    store = JobStore(client, settings.job_ttl_s)
    keys = KeyStore(client)

    @app.task(name=DELIVER_TASK, bind=True, acks_late=True, max_retries=None)
    def deliver(task, job_id: str, event: str, attempt: int = 1) -> None:
        record = store.get(job_id)
        if record is None or not record.webhook:
            return
        message_id = f"{job_id}.{event}"
        payload = json.dumps({
            "type": f"job.{event}",
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "data": JobView.of(record).model_dump(mode="json"),
        })
        entry = {"attempt": attempt, "event": event, "webhook_id": message_id, "at": time.time()}
        retry = False
        began = time.perf_counter()
        try:
            target = check_url(record.webhook, settings.url_allow_hosts, field="webhook")
            secret = secret_for(record.owner or ANONYMOUS, keys, client, settings)
            now = datetime.now(UTC)
            headers = {
                "content-type": "application/json",
                "user-agent": "vlmq-webhooks/0.1",
                "webhook-id": message_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": Webhook(secret).sign(message_id, now, payload),
            }
            with httpx.Client(timeout=settings.webhook_timeout_s, trust_env=False) as http:
                response = http.send(pinned_request(http, "POST", record.webhook, target, headers=headers,
                                                    content=payload))
            entry["status_code"] = response.status_code
            retry = response.status_code >= 500 or response.status_code in RETRY_STATUSES
            entry["outcome"] = "delivered" if response.status_code < 300 else ("retry" if retry else "rejected")
        except UnsafeURL as exc:
            entry.update(outcome="refused", error=exc.message)
        except LookupError as exc:
            entry.update(outcome="refused", error=str(exc))
        except (httpx.HTTPError, OSError) as exc:
            entry.update(outcome="retry", error=f"{exc.__class__.__name__}: {exc}"[:500])
            retry = True
        entry["duration_ms"] = round((time.perf_counter() - began) * 1000, 1)
        if retry and attempt >= settings.webhook_max_attempts:
            entry["outcome"] = "gave_up"
            retry = False
        pipe = client.pipeline(transaction=False)
        pipe.rpush(DELIVERIES.format(job_id), json.dumps(entry))
        pipe.expire(DELIVERIES.format(job_id), settings.job_ttl_s)
        pipe.execute()
        log.info("webhook %s attempt %d: %s", message_id, attempt, entry["outcome"], extra={"job_id": job_id})
        if retry:
            raise task.retry(args=[job_id, event, attempt + 1], countdown=backoff_s(attempt, settings.webhook_backoff_s))

    return app


def run_webhook_worker(settings: Settings, concurrency: int = 8) -> int:
    from vlmq.logs import setup_logging

    setup_logging("webhooks", settings.log_format, settings.log_level)
    app = build_app(settings)
    worker = app.Worker(queues=[WEBHOOK_QUEUE], pool="threads", concurrency=concurrency, loglevel="INFO",
                        without_mingle=True, without_gossip=True, task_events=True,
                        hostname=f"webhooks@{__import__('socket').gethostname()}")
    worker.start()
    return worker.exitcode or 0
