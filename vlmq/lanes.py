"""Interactive before bulk, fair share inside bulk, and each job's place in its lane.

Lanes. Each model has an interactive and a bulk queue; its workers always fetch from the
interactive queue first (vlmq/queues.py). Single submits, `Prefer: wait` and the frontend are
interactive by default; batches and `"priority": "bulk"` jobs are bulk.

Fair share in the bulk lane. A bulk job is published at a priority step chosen from how many bulk
jobs its API key already has waiting for that model: the k-th waiting job goes to step
``min(9, max(0, floor(log2(k / 8)) + 1))`` — a key's first 8 waiting jobs are at step 0, the next
8 at step 1, then 16, 32, ... (steps are served 0 first, FIFO inside a step). A key with 10,000
queued jobs thus has only its first few at the front, and a key that submits 20 jobs afterwards
lands in the front steps: it does not wait behind the whole backlog, and several heavy keys
interleave over their first ~4,000 jobs each. The count per (model, key) is incremented at submit
and decremented when a worker takes the job (`vlmq:backlog:{model}:{key}`).

Position and wait. Each lane keeps the jobs admitted and not yet taken by a worker in a sorted set
by admission time (`vlmq:pending:{model}:{lane}`); a queued job's position is its rank there (exact
for the FIFO interactive lane, an estimate for the bulk lane). The same sets give each lane's depth
for admission, and the reconciler's list of jobs to check (tasks/reconcile.py). They are
self-correcting: a job leaves its set once, when a worker first takes it.

Its estimated wait counts batches, not a rate: workers keep a moving average of their batch service
time per model (`vlmq:pace:{model}`, from taking a batch to finishing it) and say when their current
batch began (`busy_since` in their heartbeat hash). A job with `ahead` jobs before it (its lane, plus
the interactive lane for a bulk job) starts with batch number `ahead // max_batch_size`; each worker
is free when its current batch ends, then every batch time after; the job's batch starts on the
k-th free slot (`start_estimate`). Idle time counts for nothing, so an idle model's first jobs are
estimated to start at once, and a backlog's end as its batches divided among the workers.
`benchmarks/eta.py` measures the error of this estimate against actual starts.
"""

from __future__ import annotations

import heapq
import math
import time

import redis

from vlmq.fleet import ONLINE_S
from vlmq.jobs import JobRecord, Lane
from vlmq.keyspace import BACKLOG, PACE, PENDING, WORKER, WORKERS

PACE_EMA = 0.3  # weight of the newest batch
FRONT = 8
#: Past this many batches ahead, the estimate stops simulating each batch (the average is as good).
SIMULATED_BATCHES = 4096


def fair_share_step(waiting: int) -> int:
    """The priority step of a key's bulk job when it already has `waiting` queued for the model."""
    if waiting < FRONT:
        return 0
    return min(9, int(math.log2(waiting / FRONT)) + 1)


def _int(value: bytes | None) -> int:
    return int(value) if value else 0


class LaneFull(Exception):
    def __init__(self, model: str, lane: Lane, depth: int, limit: int) -> None:
        super().__init__(f"model {model!r} has {depth} {lane.value} jobs queued (limit {limit})")
        self.model, self.lane, self.depth, self.limit = model, lane, depth, limit


# KEYS: pending, backlog; ARGV: job id, bulk?. The job leaves its lane: only the first time counts.
_LEAVE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 and ARGV[2] == '1' then redis.call('DECR', KEYS[2]) end
"""


# KEYS: pace; ARGV: seconds, weight of the newest, ttl. A moving average of a model's batch time.
_PACE = """
local old = redis.call('HGET', KEYS[1], 'batch_s')
local new = tonumber(ARGV[1])
if old then new = tonumber(ARGV[2]) * new + (1 - tonumber(ARGV[2])) * tonumber(old) end
redis.call('HSET', KEYS[1], 'batch_s', tostring(new))
redis.call('EXPIRE', KEYS[1], ARGV[3])
"""


class Lanes:
    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.redis = client
        self.ttl_s = ttl_s
        self._leave = client.register_script(_LEAVE)
        self._pace = client.register_script(_PACE)

    def release(self, job_id: str, model: str, lane: Lane, owner: str) -> None:
        """The job leaves its lane (counted once: the first time)."""
        self._leave(keys=[PENDING.format(model, lane.value), BACKLOG.format(model, owner)],
                    args=[job_id, "1" if lane is Lane.bulk else "0"])

    def depth(self, model: str, lane: Lane) -> int:
        """Jobs admitted to the lane and not yet taken by a worker."""
        return self.redis.zcard(PENDING.format(model, lane.value))

    # --- when a job leaves its lane, and from the workers -----------------------------------

    def left(self, record: JobRecord) -> None:
        """The job left its lane: a worker took it, or it was canceled or aborted while queued."""
        if record.model is not None:
            self.release(record.id, record.model, record.lane, record.owner or "anonymous")

    def record_pace(self, model: str, seconds: float, pipe=None) -> None:
        """A worker of `model` ran a batch's forward passes in `seconds` (added to `pipe` if given).
        (Its `busy_since`, when its current forward pass began, is in its heartbeat hash,
        tasks/live.py.)"""
        self._pace(keys=[PACE.format(model)], args=[repr(seconds), PACE_EMA, self.ttl_s], client=pipe)

    # --- reading: a queued job's place -------------------------------------------------------

    def pace(self, model: str) -> tuple[float | None, list[float | None]]:
        """(average batch time, when each online worker's current batch began, None if idle)."""
        since = time.time() - ONLINE_S
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(PACE.format(model), "batch_s")
        pipe.zrangebyscore(WORKERS.format(model), since, "+inf")
        batch_s, names = pipe.execute()
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hmget(WORKER.format(name.decode()), "state", "busy_since")
        busy = [float(b) if b and float(b) > 0 else None for state, b in pipe.execute() if state == b"ready"]
        return (float(batch_s) if batch_s else None), busy

    def wait_for(self, model: str, ahead: int, batch_size: int) -> float | None:
        """Estimated seconds until the job with `ahead` jobs before it starts (None: no estimate yet)."""
        batch_s, busy = self.pace(model)
        return start_estimate(ahead, batch_size, batch_s, busy, time.time())

    def place(self, record: JobRecord, batch_size: int) -> tuple[int | None, float | None]:
        """(position in its lane, estimated seconds until it starts) of a queued job."""
        if record.model is None:
            return None, None
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrank(PENDING.format(record.model, record.lane.value), record.id)
        pipe.zcard(PENDING.format(record.model, Lane.interactive.value))
        rank, interactive = pipe.execute()
        position = rank or 0  # not pending any more: a worker holds it, next to start
        ahead = position + (interactive if record.lane is Lane.bulk else 0)
        wait = self.wait_for(record.model, ahead, batch_size)
        return position, (round(wait, 2) if wait is not None else None)


def start_estimate(ahead: int, batch_size: int, batch_s: float | None, busy_since: list[float | None],
                   now: float) -> float | None:
    """Seconds until the job with `ahead` jobs before it starts, given the average batch time and
    when each worker's current batch began (None: idle). None without workers or a batch time."""
    if not busy_since or batch_s is None:
        return None
    free = [max(0.0, since + batch_s - now) if since is not None else 0.0 for since in busy_since]
    batches = ahead // max(1, batch_size)  # the job's batch is the next one after these
    if batches > SIMULATED_BATCHES:
        free.sort()
        return batches // len(free) * batch_s + free[batches % len(free)]
    heapq.heapify(free)
    for _ in range(batches):
        heapq.heapreplace(free, free[0] + batch_s)
    return free[0]
