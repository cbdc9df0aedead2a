"""Recovering jobs whose broker message was lost, so that an accepted job always ends.

kombu's Redis transport pops a message (BRPOP) and only then records it as unacknowledged: a
worker killed between the two steps loses the message, and its job would stay `queued` forever.
(The soak test found one such job in 3,000 with 28 workers killed.)

vlmq keeps its own index of jobs admitted but not yet taken by a worker
(``vlmq:pending:{model}:{lane}``, see vlmq/lanes.py). Every worker runs this reconciler for its model;
one at a time per model (a Redis lock). Every half visibility timeout it looks at the jobs
admitted more than one visibility timeout ago and still `queued`, and looks for their messages:
in the model's queue lists and in kombu's unacknowledged set. A job whose message is nowhere is
published again (same id, same lane); its delivery is fenced like any redelivery.

`sweep_blobs` (on every worker's heartbeat, one worker at a time, every `BLOB_SWEEP_S`) deletes what a
crash left in the blob store (vlmq/blobs.py): images and artifacts older than `job_ttl_s`, when no
job record that could need them is left.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

import redis

from vlmq.blobs import ARTIFACTS, FILES, IMAGES, BlobStore
from vlmq.jobs import JobRecord, JobStatus, Lane
from vlmq.keyspace import BLOB_SWEEP_LOCK, PENDING, RECONCILE_LOCK
from vlmq.lanes import Lanes
from vlmq.queues import queue_keys
from vlmq.store import JobStore

log = logging.getLogger("vlmq.reconcile")
UNACKED = "unacked"  # kombu's hash of delivered, unacknowledged messages
BLOB_SWEEP_S = 300


def sweep_blobs(client: redis.Redis, blobs: BlobStore, job_ttl_s: int, file_ttl_s: int) -> int:
    """Delete images and artifacts older than `job_ttl_s` (a job that could use them has expired) and
    files older than `file_ttl_s`, once per `BLOB_SWEEP_S` across the fleet; how many went."""
    if not client.set(BLOB_SWEEP_LOCK, "1", nx=True, ex=BLOB_SWEEP_S):
        return 0
    ages = {IMAGES: job_ttl_s, ARTIFACTS: job_ttl_s, FILES: file_ttl_s}
    gone = sum(blobs.sweep(prefix, age) for prefix, age in ages.items())
    if gone:
        log.info("blob store: deleted %d blobs past their lifetime", gone)
    return gone


def _message_ids(raw_messages: list[bytes]) -> set[str]:
    ids = set()
    for raw in raw_messages:
        try:
            message = json.loads(raw)
            if isinstance(message, list):  # unacked entries: [message, exchange, routing key]
                message = message[0]
            ids.add(message["headers"]["id"])
        except (ValueError, KeyError, TypeError, IndexError):
            continue
    return ids


class Reconciler(threading.Thread):
    def __init__(self, models: list[str], client: redis.Redis, store: JobStore, lanes: Lanes,
                 republish: Callable[[JobRecord], None], visibility_timeout_s: int) -> None:
        super().__init__(daemon=True, name="vlmq-reconcile")
        self.models = models
        self.redis = client
        self.store = store
        self.lanes = lanes
        self.republish = republish
        self.visibility_timeout_s = visibility_timeout_s
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(max(1.0, self.visibility_timeout_s / 2)):
            for model in self.models:
                try:
                    self.sweep(model)
                except redis.RedisError as exc:
                    log.warning("reconcile of %s skipped: %s", model, exc)

    def sweep(self, model: str) -> list[str]:
        """Republish the model's lost jobs; their ids."""
        if not self.redis.set(RECONCILE_LOCK.format(model), "1", nx=True,
                              ex=max(5, self.visibility_timeout_s)):
            return []
        try:
            cutoff = time.time() - self.visibility_timeout_s
            pipe = self.redis.pipeline(transaction=False)
            for lane in Lane:
                pipe.zrangebyscore(PENDING.format(model, lane.value), 0, cutoff)
            candidates = [c.decode() for reply in pipe.execute() for c in reply]
            if not candidates:
                return []
            records = [r for r in self.store.get_many(candidates) if r is not None]
            queued = [r for r in records if r.status is JobStatus.queued]
            for record in records:
                if record.status is not JobStatus.queued:  # started, finished or canceled
                    self.lanes.left(record)
            expired = set(candidates) - {r.id for r in records}
            if expired:
                for lane in Lane:
                    self.redis.zrem(PENDING.format(model, lane.value), *expired)
            if not queued:
                return []
            pipe = self.redis.pipeline(transaction=False)
            for lane in Lane:
                for key in queue_keys(model, lane):
                    pipe.lrange(key, 0, -1)
            pipe.hvals(UNACKED)
            present = set()
            for reply in pipe.execute():
                present |= _message_ids(reply)
            lost = [r for r in queued if r.id not in present]
            for record in lost:
                log.warning("job %s was queued with no message left on the broker: publishing it again", record.id,
                            extra={"job_id": record.id})
                self.republish(record)
                self.redis.zadd(PENDING.format(model, record.lane.value), {record.id: time.time()}, xx=True)
            return [r.id for r in lost]
        finally:
            self.redis.delete(RECONCILE_LOCK.format(model))
