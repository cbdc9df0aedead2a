"""The job store: job records, their event streams, images and artifacts, all in Redis.

Keys (all expire after `job_ttl_s`):

- ``vlmq:job:{id}``: hash, one job record (`JobRecord.to_hash`); compare jobs add one
  ``outcome:{model}`` field per finished child.
- ``vlmq:events:{id}``: stream of the job's events: one entry per status change (``event`` is the
  status) and, for generative jobs, ``text`` entries as tokens are produced.
- ``vlmq:image:{sha256}``: the image bytes as received, stored once per content.
- ``vlmq:artifact:{id}:{name}``: files a job produced (the annotated PNG of a detect job).

Every status change is one Lua script, so a record and its event never disagree, and a worker's
write is fenced by its attempt number: a stale delivery (a worker thought dead, then back) cannot
overwrite a newer attempt's result, a canceled job's late result is dropped, and a final job
never changes again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from vlmq.jobs import JobRecord, JobStatus, now
from vlmq.metrics_store import PREFIX, labels_field

JOB = "vlmq:job:{}"
EVENTS = "vlmq:events:{}"
IMAGE = "vlmq:image:{}"
ARTIFACT = "vlmq:artifact:{}:{}"
JOINERS = "vlmq:joiners:{}"  # set: jobs joined to this one (single flight), settled when it ends
RECENT = "vlmq:recent:{}"  # sorted set per owner: job id -> created_at (top-level jobs only)
RECENT_KEEP = 1000
ANONYMOUS = "anonymous"
EVENTS_MAXLEN = 20_000
FINISHED_METRIC = PREFIX + "jobs_finished"

# Every script that makes a job final counts it here, in the same atomic step: each final status of
# each job is counted exactly once, whoever set it (worker, cancel, deadline, compare parent, joiner).
# The field is MetricsStore's label format: model=..|status=..|type=.. (labels sorted by name).
_COUNT_FINAL = """
local function count_final(key, status)
  local meta = redis.call('HMGET', key, 'type', 'model')
  redis.call('HINCRBYFLOAT', '""" + FINISHED_METRIC + """',
             'model=' .. (meta[2] or '') .. '|status=' .. status .. '|type=' .. (meta[1] or ''), 1)
end
"""

_START = _COUNT_FINAL + """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {'missing', ''} end
if st ~= 'queued' and st ~= 'running' then return {'final', st} end
local deadline = redis.call('HGET', KEYS[1], 'deadline')
if deadline and tonumber(deadline) <= tonumber(ARGV[1]) then
  local reason = 'its deadline passed before it started'
  redis.call('HSET', KEYS[1], 'status', 'aborted', 'completed_at', ARGV[1], 'cancel_reason', reason)
  count_final(KEYS[1], 'aborted')
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'event', 'aborted',
             'data', cjson.encode({status='aborted', reason=reason}))
  redis.call('EXPIRE', KEYS[2], ARGV[4])
  return {'final', 'aborted'}
end
local n = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if n > tonumber(ARGV[3]) then
  local err = cjson.encode({code='attempts_exhausted',
    message='the job was delivered ' .. (n - 1) .. ' times and never finished (it may crash its worker)'})
  redis.call('HSET', KEYS[1], 'status', 'failed', 'error', err, 'completed_at', ARGV[1])
  count_final(KEYS[1], 'failed')
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'event', 'failed',
             'data', '{"status":"failed","error":' .. err .. '}')
  redis.call('EXPIRE', KEYS[2], ARGV[4])
  return {'final', 'failed'}
end
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[1], 'worker', ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'event', 'running',
           'data', cjson.encode({status='running', attempt=n, worker=ARGV[2]}))
redis.call('EXPIRE', KEYS[2], ARGV[4])
return {'run', tostring(n)}
"""

_FINISH = _COUNT_FINAL + """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if redis.call('HGET', KEYS[1], 'attempts') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'completed_at', ARGV[5])
count_final(KEYS[1], ARGV[2])
local data = '{"status":"' .. ARGV[2] .. '"'
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'output', ARGV[3]); data = data .. ',"output":' .. ARGV[3]
end
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'error', ARGV[4]); data = data .. ',"error":' .. ARGV[4]
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*', 'event', ARGV[2], 'data', data .. '}')
redis.call('EXPIRE', KEYS[2], ARGV[6])
return 1
"""

_CANCEL = _COUNT_FINAL + """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return '' end
if st ~= 'queued' and st ~= 'running' then return st end
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'completed_at', ARGV[1], 'cancel_reason', ARGV[2])
count_final(KEYS[1], ARGV[3])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'event', ARGV[3],
           'data', cjson.encode({status=ARGV[3], reason=ARGV[2]}))
redis.call('EXPIRE', KEYS[2], ARGV[4])
return ARGV[3]
"""

# A compare job's child reached a final state: record its outcome once; the last one settles the parent.
_SETTLE_PARENT = _COUNT_FINAL + """
redis.call('HSETNX', KEYS[1], 'outcome:' .. ARGV[1], ARGV[2])
local st = redis.call('HGET', KEYS[1], 'status')
if not st or (st ~= 'queued' and st ~= 'running') then return st or '' end
local children = cjson.decode(redis.call('HGET', KEYS[1], 'children'))
local total, done, ok = 0, 0, 0
for model, _ in pairs(children) do
  total = total + 1
  local outcome = redis.call('HGET', KEYS[1], 'outcome:' .. model)
  if outcome then
    done = done + 1
    if cjson.decode(outcome).status == 'succeeded' then ok = ok + 1 end
  end
end
if st == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[3])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'event', 'running', 'data', '{"status":"running"}')
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'event', 'partial',
           'data', cjson.encode({model=ARGV[1], outcome=cjson.decode(ARGV[2])}))
if done < total then redis.call('EXPIRE', KEYS[2], ARGV[4]); return 'running' end
local final = 'succeeded'
if ok == 0 then final = 'failed' end
redis.call('HSET', KEYS[1], 'status', final, 'completed_at', ARGV[3])
count_final(KEYS[1], final)
if ok == 0 then
  redis.call('HSET', KEYS[1], 'error', cjson.encode({code='all_models_failed', message='every model failed'}))
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'event', final, 'data', cjson.encode({status=final}))
redis.call('EXPIRE', KEYS[2], ARGV[4])
return final
"""

_MARK_PARENT_RUNNING = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'event', 'running', 'data', '{"status":"running"}')
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""


# KEYS: source job, joiners set. Join while the source is not final; else return its status.
_JOIN = """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 'missing' end
if st ~= 'queued' and st ~= 'running' then return st end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 'joined'
"""

# KEYS: source job, joiners set; ARGV: ttl, maxlen, prefix of job keys, prefix of event keys.
# Copies the source's final status and result into every joiner not final yet.
_SETTLE_JOINERS = _COUNT_FINAL + """
local src = redis.call('HMGET', KEYS[1], 'status', 'output', 'error', 'started_at', 'completed_at', 'cancel_reason')
local st = src[1]
if not st or st == 'queued' or st == 'running' then return {} end
local settled = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local key = ARGV[3] .. id
  local jst = redis.call('HGET', key, 'status')
  if jst == 'queued' or jst == 'running' then
    redis.call('HSET', key, 'status', st, 'completed_at', src[5] or '')
    count_final(key, st)
    if src[4] then redis.call('HSET', key, 'started_at', src[4]) end
    local data = '{"status":"' .. st .. '"'
    if src[2] then redis.call('HSET', key, 'output', src[2]); data = data .. ',"output":' .. src[2] end
    if src[3] then redis.call('HSET', key, 'error', src[3]); data = data .. ',"error":' .. src[3] end
    if src[6] then redis.call('HSET', key, 'cancel_reason', 'the job it joined: ' .. src[6]) end
    redis.call('XADD', ARGV[4] .. id, 'MAXLEN', '~', ARGV[2], '*', 'event', st, 'data', data .. '}')
    redis.call('EXPIRE', ARGV[4] .. id, ARGV[1])
    table.insert(settled, id)
  end
end
redis.call('DEL', KEYS[2])
return settled
"""


@dataclass(frozen=True)
class Start:
    """What a worker may do with a delivered job: `run` it as `attempt`, or not (`final` / `missing`)."""

    action: str
    attempt: int = 0
    status: str | None = None


@dataclass(frozen=True)
class Event:
    id: str
    event: str
    data: dict[str, Any]


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class JobStore:
    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.redis = client
        self.ttl_s = ttl_s
        self._start = client.register_script(_START)
        self._finish = client.register_script(_FINISH)
        self._cancel = client.register_script(_CANCEL)
        self._settle = client.register_script(_SETTLE_PARENT)
        self._mark_running = client.register_script(_MARK_PARENT_RUNNING)
        self._join = client.register_script(_JOIN)
        self._settle_joiners = client.register_script(_SETTLE_JOINERS)

    # --- records --------------------------------------------------------------------------

    def create(self, *records: JobRecord) -> None:
        """Write new records and their first event, in one round trip."""
        pipe = self.redis.pipeline(transaction=True)
        for record in records:
            key, events = JOB.format(record.id), EVENTS.format(record.id)
            pipe.hset(key, mapping=record.to_hash())
            pipe.expire(key, self.ttl_s)
            data = {"status": record.status.value}
            if record.output is not None:
                data["output"] = record.output
            pipe.xadd(events, {"event": record.status.value, "data": json.dumps(data)}, maxlen=EVENTS_MAXLEN)
            pipe.expire(events, self.ttl_s)
            if record.status.final:
                pipe.hincrbyfloat(FINISHED_METRIC, labels_field(
                    {"type": record.type.value, "model": record.model or "", "status": record.status.value}), 1)
            if record.parent is None:
                recent = RECENT.format(record.owner or ANONYMOUS)
                pipe.zadd(recent, {record.id: record.created_at})
                pipe.zremrangebyrank(recent, 0, -RECENT_KEEP - 1)
                pipe.expire(recent, self.ttl_s)
        pipe.execute()

    def recent(self, owner: str | None, limit: int = 50) -> list[JobRecord]:
        """The owner's latest top-level jobs, newest first (expired ones left out)."""
        ids = [_text(i) for i in self.redis.zrevrange(RECENT.format(owner or ANONYMOUS), 0, limit - 1)]
        return [r for r in self.get_many(ids) if r is not None]

    def get(self, job_id: str) -> JobRecord | None:
        raw = self.redis.hgetall(JOB.format(job_id))
        if not raw:
            return None
        return JobRecord.from_hash({_text(k): _text(v) for k, v in raw.items()})

    def get_many(self, job_ids: Iterable[str]) -> list[JobRecord | None]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(JOB.format(job_id))
        return [
            JobRecord.from_hash({_text(k): _text(v) for k, v in raw.items()}) if raw else None
            for raw in pipe.execute()
        ]

    def statuses(self, job_ids: list[str]) -> list[str | None]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(JOB.format(job_id), "status")
        return [_text(s) for s in pipe.execute()]

    def set_fields(self, job_id: str, **fields: str) -> None:
        self.redis.hset(JOB.format(job_id), mapping=fields)

    # --- transitions ----------------------------------------------------------------------

    def start(self, job_id: str, worker: str, max_attempts: int) -> Start:
        action, detail = self._start(
            keys=[JOB.format(job_id), EVENTS.format(job_id)],
            args=[repr(now()), worker, max_attempts, self.ttl_s, EVENTS_MAXLEN],
        )
        action, detail = _text(action), _text(detail)
        if action == "run":
            return Start("run", attempt=int(detail))
        return Start(action, status=detail or None)

    def finish(
        self,
        job_id: str,
        attempt: int,
        status: JobStatus,
        output: dict | None = None,
        error: dict | None = None,
    ) -> bool:
        """Record a worker's result; False when fenced out (stale attempt, canceled, final)."""
        return bool(
            self._finish(
                keys=[JOB.format(job_id), EVENTS.format(job_id)],
                args=[
                    attempt,
                    status.value,
                    json.dumps(output) if output is not None else "",
                    json.dumps(error) if error is not None else "",
                    repr(now()),
                    self.ttl_s,
                    EVENTS_MAXLEN,
                ],
            )
        )

    def cancel(self, job_id: str, reason: str, status: JobStatus = JobStatus.canceled) -> str | None:
        """Cancel a queued or running job. Returns its status afterwards (None: no such job)."""
        result = _text(
            self._cancel(
                keys=[JOB.format(job_id), EVENTS.format(job_id)],
                args=[repr(now()), reason, status.value, self.ttl_s, EVENTS_MAXLEN],
            )
        )
        return result or None

    def settle_parent(self, parent_id: str, model: str, child: JobRecord) -> str:
        outcome: dict[str, Any] = {"status": child.status.value, "job_id": child.id}
        if child.output is not None:
            outcome["output"] = child.output
        if child.error is not None:
            outcome["error"] = child.error
        elif child.status in (JobStatus.canceled, JobStatus.aborted):
            outcome["error"] = {"code": child.status.value, "message": child.cancel_reason or child.status.value}
        return _text(
            self._settle(
                keys=[JOB.format(parent_id), EVENTS.format(parent_id)],
                args=[model, json.dumps(outcome), repr(now()), self.ttl_s, EVENTS_MAXLEN],
            )
        )

    def mark_parent_running(self, parent_id: str) -> None:
        self._mark_running(
            keys=[JOB.format(parent_id), EVENTS.format(parent_id)], args=[repr(now()), self.ttl_s, EVENTS_MAXLEN]
        )

    def discard(self, job_id: str, owner: str | None = None) -> None:
        """Remove a record no client ever saw (a joiner whose source ended before the join)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(JOB.format(job_id), EVENTS.format(job_id))
        pipe.zrem(RECENT.format(owner or ANONYMOUS), job_id)
        pipe.execute()

    def join(self, source_id: str, joiner_id: str) -> str:
        """Attach a (stored) joiner to a source job that is not final yet: 'joined'. Otherwise the
        source's final status ('missing' if it is gone): the caller answers the joiner itself."""
        return _text(self._join(keys=[JOB.format(source_id), JOINERS.format(source_id)], args=[joiner_id, self.ttl_s]))

    def settle_joiners(self, source_id: str) -> list[str]:
        """The source ended: give its result to every joiner still waiting; their ids."""
        settled = self._settle_joiners(
            keys=[JOB.format(source_id), JOINERS.format(source_id)],
            args=[self.ttl_s, EVENTS_MAXLEN, JOB.format(""), EVENTS.format("")],
        )
        return [_text(x) for x in settled]

    # --- events ---------------------------------------------------------------------------

    def emit(self, job_id: str, event: str, data: dict[str, Any]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(EVENTS.format(job_id), {"event": event, "data": json.dumps(data)}, maxlen=EVENTS_MAXLEN)
        pipe.expire(EVENTS.format(job_id), self.ttl_s)
        pipe.execute()

    def events(self, job_id: str, after: str = "0", block_ms: int | None = None, count: int = 500) -> list[Event]:
        """Events after id `after` ("0": from the start), waiting up to `block_ms` for new ones."""
        reply = self.redis.xread({EVENTS.format(job_id): after}, count=count, block=block_ms)
        return [
            Event(_text(entry_id), _text(fields[b"event"]), json.loads(fields[b"data"]))
            for _stream, entries in reply or []
            for entry_id, fields in entries
        ]

    # --- images and artifacts -------------------------------------------------------------

    def put_image(self, key: str, data: bytes) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(IMAGE.format(key), data, ex=self.ttl_s, nx=True)
        pipe.expire(IMAGE.format(key), self.ttl_s)
        pipe.execute()

    def get_image(self, key: str) -> bytes | None:
        return self.redis.get(IMAGE.format(key))

    def put_artifact(self, job_id: str, name: str, data: bytes) -> None:
        self.redis.set(ARTIFACT.format(job_id, name), data, ex=self.ttl_s)

    def get_artifact(self, job_id: str, name: str) -> bytes | None:
        return self.redis.get(ARTIFACT.format(job_id, name))

