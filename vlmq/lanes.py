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
for the FIFO interactive lane, an estimate for the bulk lane), and its estimated wait is the work
ahead of it (its lane, plus the interactive lane for a bulk job) divided by the model's throughput
over the last minute. The same sets give each lane's depth for admission, and the reconciler's
list of jobs to check (tasks/reconcile.py). They are self-correcting: a job leaves its set once,
when a worker first takes it.
"""

from __future__ import annotations

import math
import time

import redis

from vlmq.jobs import JobRecord, Lane

BACKLOG = "vlmq:backlog:{}:{}"
PENDING = "vlmq:pending:{}:{}"  # sorted set per model and lane: job id -> admitted at, until taken
THROUGHPUT = "vlmq:throughput:{}"  # hash: epoch second -> jobs finished that second
WINDOW_S = 60
FRONT = 8


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


# KEYS: pending, backlog; ARGV: limit, bulk?, ttl, job id, now. -> {1, backlog before} or {-1, depth}
# A job's score is its admission time, made strictly greater than the last one's (by 0.1 ms at
# least): jobs admitted in the same instant keep their order, so ranks are positions.
_ADMIT = """
local depth = redis.call('ZCARD', KEYS[1])
if depth >= tonumber(ARGV[1]) then return {-1, depth} end
local score = tonumber(ARGV[5])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2]
if last and tonumber(last) >= score then score = tonumber(last) + 0.0001 end
redis.call('ZADD', KEYS[1], score, ARGV[4])
local before = 0
if ARGV[2] == '1' then
  before = redis.call('INCR', KEYS[2]) - 1
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
return {1, before}
"""

# KEYS: pending, backlog; ARGV: job id, bulk?. The job leaves its lane: only the first time counts.
_LEAVE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 and ARGV[2] == '1' then redis.call('DECR', KEYS[2]) end
"""


class Lanes:
    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.redis = client
        self.ttl_s = ttl_s
        self._admit = client.register_script(_ADMIT)
        self._leave = client.register_script(_LEAVE)
        self._rates: dict[str, tuple[float, float]] = {}

    # --- the API, at submit ----------------------------------------------------------------

    def admit(self, job_id: str, model: str, lane: Lane, owner: str, limit: int) -> int:
        """The priority step of a new job of `owner` in the model's lane; atomically refused
        (`LaneFull`) when the lane already holds `limit` jobs not yet taken by a worker."""
        ok, value = self._admit(
            keys=[PENDING.format(model, lane.value), BACKLOG.format(model, owner)],
            args=[limit, "1" if lane is Lane.bulk else "0", self.ttl_s, job_id, repr(time.time())],
        )
        if ok < 0:
            raise LaneFull(model, lane, value, limit)
        return fair_share_step(value) if lane is Lane.bulk else 0

    def release(self, job_id: str, model: str, lane: Lane, owner: str) -> None:
        """Undo an admission whose job was not published after all."""
        self._leave(keys=[PENDING.format(model, lane.value), BACKLOG.format(model, owner)],
                    args=[job_id, "1" if lane is Lane.bulk else "0"])

    def depth(self, model: str, lane: Lane) -> int:
        """Jobs admitted to the lane and not yet taken by a worker."""
        return self.redis.zcard(PENDING.format(model, lane.value))

    # --- the worker, when it takes a job ----------------------------------------------------

    def taken(self, record: JobRecord) -> None:
        if record.model is not None:
            self.release(record.id, record.model, record.lane, record.owner or "anonymous")

    def finished(self, model: str, count: int = 1) -> None:
        second = int(time.time())
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(THROUGHPUT.format(model), str(second), count)
        pipe.hdel(THROUGHPUT.format(model), *(str(s) for s in range(second - 3 * WINDOW_S, second - 2 * WINDOW_S)))
        pipe.expire(THROUGHPUT.format(model), 3 * WINDOW_S)
        pipe.execute()

    # --- reading: a queued job's place -------------------------------------------------------

    def throughput(self, model: str) -> float:
        """Jobs per second the model's workers finished over the last minute (read at most once a
        second per model: it is a one-minute average)."""
        cached = self._rates.get(model)
        if cached is not None and time.monotonic() - cached[0] < 1.0:
            return cached[1]
        now = int(time.time())
        counts = self.redis.hmget(THROUGHPUT.format(model), [str(s) for s in range(now - WINDOW_S, now)])
        rate = sum(_int(c) for c in counts) / WINDOW_S
        self._rates[model] = (time.monotonic(), rate)
        return rate

    def place(self, record: JobRecord) -> tuple[int | None, float | None]:
        """(position in its lane, estimated seconds until it starts) of a queued job."""
        if record.model is None:
            return None, None
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrank(PENDING.format(record.model, record.lane.value), record.id)
        pipe.zcard(PENDING.format(record.model, Lane.interactive.value))
        rank, interactive = pipe.execute()
        position = rank or 0  # not pending any more: a worker holds it, next to start
        ahead = position + (interactive if record.lane is Lane.bulk else 0)
        rate = self.throughput(record.model)
        return position, (round(ahead / rate, 1) if rate > 0 else None)
