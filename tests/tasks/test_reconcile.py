"""The reconciler republishes a queued job whose broker message vanished, and only such a job."""

from __future__ import annotations

import json
import time

import redis

from vlmq.admission import Admission
from vlmq.jobs import JobRecord, JobStatus, Lane, now
from vlmq.jobtypes import JobType
from vlmq.keyspace import PENDING
from vlmq.lanes import Lanes
from vlmq.queues import queue_name
from vlmq.settings import Settings
from vlmq.store import JobStore
from vlmq.tasks.app import make_celery, publish
from vlmq.tasks.reconcile import Reconciler

MODEL = "reconcile-model"


def _job(job_id: str) -> JobRecord:
    return JobRecord(id=job_id, type=JobType.caption, status=JobStatus.queued, params={"type": "caption"},
                     model=MODEL, image="k", created_at=now(), lane=Lane.bulk)


def test_lost_messages_are_published_again(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    store = JobStore(client, 600)
    lanes = Lanes(client, 600)
    app = make_celery(Settings(redis_url=redis_url))
    client.delete(*(PENDING.format(MODEL, lane.value) for lane in Lane), *(queue_name(MODEL, lane) for lane in Lane))
    lost, waiting, started = _job("lost-1"), _job("waiting-1"), _job("started-1")
    admission = Admission(client, 600)
    for record in (lost, waiting, started):
        admission.submit_blocking([record], {record.id: 100})
    bulk = queue_name(MODEL, Lane.bulk)
    for raw in client.lrange(bulk, 0, -1):  # lost's message vanishes (a worker killed between BRPOP and ack)
        if json.loads(raw)["headers"]["id"] in (lost.id, started.id):
            client.lrem(bulk, 1, raw)
    store.start(started.id, "w", 3)  # a worker took it: not pending any more
    old = time.time() - 100
    client.zadd(PENDING.format(MODEL, Lane.bulk.value), {lost.id: old, waiting.id: old})

    republished: list[str] = []
    reconciler = Reconciler([MODEL], client, store, lanes, lambda record: (republished.append(record.id), publish(app, record)),
                            visibility_timeout_s=30)
    assert reconciler.sweep(MODEL) == ["lost-1"]
    assert republished == ["lost-1"]
    assert client.llen(queue_name(MODEL, Lane.bulk)) == 2  # waiting's message and lost's new one
    assert reconciler.sweep(MODEL) == []  # lost-1 is pending again, recently: not swept twice
    assert client.zscore(PENDING.format(MODEL, Lane.bulk.value), started.id) is None
