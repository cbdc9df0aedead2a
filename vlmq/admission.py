"""Admitting jobs: one Lua script per submit (or per batch item), one Redis round trip.

For a single job, a compare job and its children, or a cache answer, the script does at once what a
correct submit needs, all or nothing:

1. lane admission of every job to queue: refused (`LaneFull`, the API's 429) when a lane already
   holds `queue_limit` jobs not yet taken (vlmq/lanes.py), before anything is written;
2. the job records (hashes, with their TTL), the caller's list of recent jobs, `jobs_submitted`
   (and, for a record born final, a cache answer, its final event and `jobs_finished`);
3. the job's place in its lane (`vlmq:pending:...`) and, for a bulk job, its key's backlog (fair
   share step, `lanes.fair_share_step`);
4. the Celery task message, LPUSHed to the list of the model's lane queue at that priority step,
   exactly as kombu's Redis transport would (`queues.task_message`): Celery workers consume it,
   acknowledge it late, and restore it when a worker dies, as before;
5. what a wait estimate needs, read in the same step: the lane position, the model's average batch
   time, and when each of its ready workers began its current batch (`lanes.start_estimate`).

A queued job has no event stream yet (a stream costs Redis ~5 KB): its `queued` event is implied by
the record, and the API's event readers give it (vlmq/store.py, `QUEUED_EVENT_ID`). Its image is not
in Redis: it is in the blob store (vlmq/blobs.py), written before the script runs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from vlmq.fleet import ONLINE_S
from vlmq.jobs import JobRecord
from vlmq.keyspace import (
    BACKLOG,
    EVENTS,
    FINISHED_METRIC,
    JOB,
    METRICS_PREFIX,
    PACE,
    PENDING,
    RECENT,
    WORKER,
    WORKERS,
)
from vlmq.lanes import FRONT, LaneFull, start_estimate
from vlmq.queues import KOMBU_SEP, task_message
from vlmq.store import ANONYMOUS, EVENTS_MAXLEN, RECENT_KEEP


def _lua_escape(text: str) -> str:
    return "".join(f"\\{ord(c)}" for c in text)


#: Values per record in the script's ARGV.
_PER_RECORD = 12

_SUBMIT = f"""
local now, ttl, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local function arg(i, k) return ARGV[6 + (i - 1) * {_PER_RECORD} + k] end
local function pending(model, lane) return '{PENDING.format("' .. model .. '", "' .. lane .. '")}' end
-- 1. every lane has room, or nothing is written
for i = 1, n do
  if arg(i, 8) == '1' then
    local depth = redis.call('ZCARD', pending(arg(i, 3), arg(i, 9)))
    if depth >= tonumber(arg(i, 10)) then return {{-1, i, depth}} end
  end
end
local places = {{}}
for i = 1, n do
  local id, model, owner = arg(i, 0), arg(i, 3), arg(i, 6)
  -- 2. the record, the owner's recent jobs, the counters
  local key = '{JOB.format("")}' .. id
  redis.call('HSET', key, unpack(cjson.decode(arg(i, 1))))
  redis.call('EXPIRE', key, ttl)
  local labels = 'model=' .. model .. '|type=' .. arg(i, 2)
  redis.call('HINCRBYFLOAT', '{METRICS_PREFIX}jobs_submitted', labels, 1)
  if arg(i, 4) ~= 'queued' then
    local events = '{EVENTS.format("")}' .. id
    redis.call('XADD', events, 'MAXLEN', '~', {EVENTS_MAXLEN}, '*', 'event', arg(i, 4), 'data', arg(i, 5))
    redis.call('EXPIRE', events, ttl)
    redis.call('HINCRBYFLOAT', '{FINISHED_METRIC}',
               'model=' .. model .. '|status=' .. arg(i, 4) .. '|type=' .. arg(i, 2), 1)
  end
  if arg(i, 7) == '1' then
    local recent = '{RECENT.format("")}' .. owner
    redis.call('ZADD', recent, now, id)
    redis.call('ZREMRANGEBYRANK', recent, 0, -{RECENT_KEEP} - 1)
    redis.call('EXPIRE', recent, ttl)
  end
  -- 3. its place in the lane (admission order kept: strictly increasing scores), fair share in bulk
  if arg(i, 8) == '1' then
    local lane, queue = pending(model, arg(i, 9)), 'vlmq.' .. model .. '.' .. arg(i, 9)
    local score = now
    local last = redis.call('ZRANGE', lane, -1, -1, 'WITHSCORES')[2]
    if last and tonumber(last) >= score then score = tonumber(last) + 0.0001 end
    redis.call('ZADD', lane, score, id)
    local step = 0
    if arg(i, 9) == 'bulk' then
      local backlog = '{BACKLOG.format("' .. model .. '", "' .. owner .. '")}'
      local waiting = redis.call('INCR', backlog) - 1
      redis.call('EXPIRE', backlog, ttl)
      if waiting >= {FRONT} then
        step = 1
        local top = {FRONT} * 2
        while waiting >= top and step < 9 do step = step + 1; top = top * 2 end
      end
    end
    -- 4. the Celery message, where kombu would put it (a priority step > 0 has its own list)
    local message = arg(i, 11)
    if step > 0 then
      queue = queue .. '{_lua_escape(KOMBU_SEP)}' .. step
      message = string.gsub(message, '"priority":0,', '"priority":' .. step .. ',', 1)
    end
    redis.call('LPUSH', queue, message)
    local position = redis.call('ZCARD', lane) - 1
    local ahead = position  -- a bulk job also waits for the interactive lane
    if arg(i, 9) == 'bulk' then ahead = ahead + redis.call('ZCARD', pending(model, 'interactive')) end
    table.insert(places, {{position, ahead}})
  end
end
for _, tier in ipairs(cjson.decode(ARGV[5])) do
  redis.call('HINCRBYFLOAT', '{METRICS_PREFIX}cache_answers', 'tier=' .. tier, 1)
end
-- 5. for the wait estimate: the model's batch time and its ready workers' current batches
local busy = {{}}
local batch_s = false
if ARGV[4] ~= '' then
  batch_s = redis.call('HGET', '{PACE.format("' .. ARGV[4] .. '")}', 'batch_s')
  local workers = redis.call('ZRANGEBYSCORE', '{WORKERS.format("' .. ARGV[4] .. '")}', now - {ONLINE_S}, '+inf')
  for _, name in ipairs(workers) do
    local w = redis.call('HMGET', '{WORKER.format("")}' .. name, 'state', 'busy_since')
    if w[1] == 'ready' then table.insert(busy, w[2] or '0') end
  end
end
return {{1, places, batch_s, busy}}
"""


@dataclass(frozen=True)
class Admitted:
    """What the script answered: each queued job's position in its lane, and its wait estimate."""

    positions: dict[str, int]
    eta_s: dict[str, float | None]


class Admission:
    def __init__(self, client, ttl_s: int) -> None:
        """`client`: a redis-py client, blocking or asyncio (`submit` returns what it returns)."""
        self.ttl_s = ttl_s
        self._script = client.register_script(_SUBMIT)

    def _args(self, records: list[JobRecord], queued: dict[str, int], estimate_for: str | None,
              counters: tuple[str, ...]) -> list[str]:
        args = [repr(time.time()), str(self.ttl_s), str(len(records)), estimate_for or "", json.dumps(list(counters))]
        for record in records:
            owner = record.owner or ANONYMOUS
            limit = queued.get(record.id)
            event = "" if not record.status.final else json.dumps(
                {"status": record.status.value, **({"output": record.output} if record.output is not None else {})})
            args += [
                record.id,
                json.dumps([x for pair in record.to_hash().items() for x in pair]),
                record.type.value,
                record.model or "",
                record.status.value,
                event,
                owner,
                "1" if record.parent is None else "0",
                "1" if limit is not None else "0",
                record.lane.value,
                str(limit or 0),
                task_message(record) if limit is not None else "",
            ]
        return args

    async def submit(self, records: list[JobRecord], queued: dict[str, int], batch_size: int = 1,
                     counters: tuple[str, ...] = ()) -> Admitted:
        """Write `records`; queue those in `queued` (job id -> its lane's queue limit); add one to
        `vlmq_cache_answers_total` for each tier in `counters`. Raises `LaneFull` (nothing
        written) when a lane has no room. `batch_size`: the model's, for the wait estimate."""
        estimate_for = next((r.model for r in records if r.id in queued), None)
        reply = await self._script(args=self._args(records, queued, estimate_for, counters))
        return self._admitted(reply, records, queued, batch_size)

    def submit_blocking(self, records: list[JobRecord], queued: dict[str, int], batch_size: int = 1,
                        counters: tuple[str, ...] = ()) -> Admitted:
        """`submit` with a blocking client (tests, tools)."""
        estimate_for = next((r.model for r in records if r.id in queued), None)
        reply = self._script(args=self._args(records, queued, estimate_for, counters))
        return self._admitted(reply, records, queued, batch_size)

    @staticmethod
    def _admitted(reply, records: list[JobRecord], queued: dict[str, int], batch_size: int) -> Admitted:
        if reply[0] == -1:
            record = records[int(reply[1]) - 1]
            raise LaneFull(record.model or "", record.lane, int(reply[2]), queued[record.id])
        _ok, places, batch_s, busy = reply
        ids = [r.id for r in records if r.id in queued]
        since = [float(b) if float(b) > 0 else None for b in busy]
        pace = float(batch_s) if batch_s else None
        now = time.time()
        positions, eta = {}, {}
        for job_id, (position, ahead) in zip(ids, places, strict=True):
            positions[job_id] = int(position)
            wait = start_estimate(int(ahead), batch_size, pace, since, now)
            eta[job_id] = round(wait, 2) if wait is not None else None
        return Admitted(positions, eta)

