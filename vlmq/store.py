"""The job store: job records and their event streams, in Redis (images and artifacts are in the
blob store, vlmq/blobs.py).

Keys (all expire after `job_ttl_s`):

- ``vlmq:job:{id}``: hash, one job record (`JobRecord.to_hash`); compare jobs add one
  ``outcome:{model}`` field per finished child.
- ``vlmq:events:{id}``: stream of the job's events: one entry per status change (``event`` is the
  status) and, for generative jobs, ``text`` entries as tokens are produced. A queued job has none
  yet (a stream costs ~5 KB of Redis, a queued job's whole budget is 2 KB): its first event,
  `queued`, is implied by its record (`implied_events`, id `0-1`, before any real id), and the stream
  begins with the first change of status.

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

from vlmq.fanout import SETTLE_PARENT
from vlmq.jobs import CacheOutcome, JobRecord, JobStatus, now
from vlmq.keyspace import BACKLOG, EVENTS, FINISHED_METRIC, JOB, JOINERS, OAI_BATCH_COUNTS, PENDING, RECENT
from vlmq.metrics_store import labels_field

RECENT_KEEP = 1000
ANONYMOUS = "anonymous"
EVENTS_MAXLEN = 20_000
#: The implied `queued` event of a job accepted into a queue: before every id Redis hands out.
QUEUED_EVENT_ID = "0-1"
#: The final status of a finished job whose event stream expired before its record.
FINAL_EVENT_ID = "0-2"

# The scripts share these Lua functions. TTL and MAXLEN are set by each script from its ARGV.
# Every function that makes a job final counts it (`count_final`), in the same atomic step: each
# final status of each job is counted exactly once, whoever set it (worker, cancel, deadline, compare
# parent, joiner). The field is MetricsStore's label format: model=..|status=..|type=.. (sorted).
# A job of an OpenAI-style batch (its `batch` field) is also counted in its batch's tally.
_LIB = f"""
local TTL, MAXLEN
local function count_final(key, status)
  local meta = redis.call('HMGET', key, 'type', 'model', 'batch')
  redis.call('HINCRBYFLOAT', '{FINISHED_METRIC}',
             'model=' .. (meta[2] or '') .. '|status=' .. status .. '|type=' .. (meta[1] or ''), 1)
  if meta[3] then redis.call('HINCRBY', '{OAI_BATCH_COUNTS.format("")}' .. meta[3], status, 1) end
end
local function event(id, name, data)
  local key = '{EVENTS.format("")}' .. id
  redis.call('XADD', key, 'MAXLEN', '~', MAXLEN, '*', 'event', name, 'data', data)
  redis.call('EXPIRE', key, TTL)
end
local function leave_lane(key, id)
  -- the job leaves its lane once, the first time a worker takes it (vlmq/lanes.py)
  local meta = redis.call('HMGET', key, 'model', 'lane', 'owner')
  if not meta[1] then return end
  local lane, owner = meta[2] or 'interactive', meta[3] or '{ANONYMOUS}'
  local pending = '{PENDING.format("' .. meta[1] .. '", "' .. lane .. '")}'
  if redis.call('ZREM', pending, id) == 1 and lane == 'bulk' then
    redis.call('DECR', '{BACKLOG.format("' .. meta[1] .. '", "' .. owner .. '")}')
  end
end
-- A delivered job: run it ('run', attempt), or not ('final', status; 'missing').
local function start(id, now, worker, max_attempts)
  local key = '{JOB.format("")}' .. id
  local st = redis.call('HGET', key, 'status')
  if not st then return 'missing', '' end
  leave_lane(key, id)
  if st ~= 'queued' and st ~= 'running' then return 'final', st end
  local deadline = redis.call('HGET', key, 'deadline')
  if deadline and tonumber(deadline) <= tonumber(now) then
    local reason = 'its deadline passed before it started'
    redis.call('HSET', key, 'status', 'aborted', 'completed_at', now, 'cancel_reason', reason)
    count_final(key, 'aborted')
    event(id, 'aborted', cjson.encode({{status='aborted', reason=reason}}))
    return 'ended', 'aborted'
  end
  local n = redis.call('HINCRBY', key, 'attempts', 1)
  if n > tonumber(max_attempts) then
    local err = cjson.encode({{code='attempts_exhausted',
      message='the job was delivered ' .. (n - 1) .. ' times and never finished (it may crash its worker)'}})
    redis.call('HSET', key, 'status', 'failed', 'error', err, 'completed_at', now)
    count_final(key, 'failed')
    event(id, 'failed', '{{"status":"failed","error":' .. err .. '}}')
    return 'ended', 'failed'
  end
  redis.call('HSET', key, 'status', 'running', 'started_at', now, 'worker', worker)
  event(id, 'running', cjson.encode({{status='running', attempt=n, worker=worker}}))
  local parent = redis.call('HGET', key, 'parent')
  if parent and redis.call('HGET', '{JOB.format("")}' .. parent, 'status') == 'queued' then
    redis.call('HSET', '{JOB.format("")}' .. parent, 'status', 'running', 'started_at', now)
    event(parent, 'running', '{{"status":"running"}}')
  end
  return 'run', tostring(n)
end
-- A worker's result, fenced: only the attempt that is still running writes it.
local function finish(id, attempt, status, output, err, reason, now)
  local key = '{JOB.format("")}' .. id
  if redis.call('HGET', key, 'status') ~= 'running' then return 0 end
  if redis.call('HGET', key, 'attempts') ~= attempt then return 0 end
  redis.call('HSET', key, 'status', status, 'completed_at', now)
  count_final(key, status)
  local data = '{{"status":"' .. status .. '"'
  if output ~= '' then redis.call('HSET', key, 'output', output); data = data .. ',"output":' .. output end
  if err ~= '' then redis.call('HSET', key, 'error', err); data = data .. ',"error":' .. err end
  if reason ~= '' then
    redis.call('HSET', key, 'cancel_reason', reason); data = data .. ',"reason":' .. cjson.encode(reason)
  end
  event(id, status, data .. '}}')
  return 1
end
-- The source ended: its final status and result to every job joined to it (single flight).
local function settle_joiners(id)
  local src = redis.call('HMGET', '{JOB.format("")}' .. id, 'status', 'output', 'error', 'started_at',
                         'completed_at', 'cancel_reason')
  local st = src[1]
  if not st or st == 'queued' or st == 'running' then return {{}} end
  local joiners = '{JOINERS.format("")}' .. id
  local settled = {{}}
  for _, jid in ipairs(redis.call('SMEMBERS', joiners)) do
    local key = '{JOB.format("")}' .. jid
    local jst = redis.call('HGET', key, 'status')
    if jst == 'queued' or jst == 'running' then
      redis.call('HSET', key, 'status', st, 'completed_at', src[5] or '')
      count_final(key, st)
      if src[4] then redis.call('HSET', key, 'started_at', src[4]) end
      local data = '{{"status":"' .. st .. '"'
      if src[2] then redis.call('HSET', key, 'output', src[2]); data = data .. ',"output":' .. src[2] end
      if src[3] then redis.call('HSET', key, 'error', src[3]); data = data .. ',"error":' .. src[3] end
      if src[6] then redis.call('HSET', key, 'cancel_reason', 'the job it joined: ' .. src[6]) end
      event(jid, st, data .. '}}')
      table.insert(settled, jid)
    end
  end
  redis.call('DEL', joiners)
  return settled
end
{SETTLE_PARENT}"""

# ARGV: now, worker, max_attempts, ttl, maxlen, then the job ids. Per job: {id, action, detail, record}
# (the record as HGETALL's flat list, empty when missing).
_CLAIM_BATCH = _LIB + f"""
TTL, MAXLEN = ARGV[4], ARGV[5]
local out = {{}}
for i = 6, #ARGV do
  local id = ARGV[i]
  local action, detail = start(id, ARGV[1], ARGV[2], ARGV[3])
  table.insert(out, {{id, action, detail, redis.call('HGETALL', '{JOB.format("")}' .. id)}})
end
return out
"""

# ARGV: now, ttl, maxlen, then per job 8 values: id, attempt, status, output, error, reason, its outcome
# for a compare parent, text still to stream before its end. Per job: {written, joiners settled,
# parent, the parent's status after}.
_FINISH_BATCH = _LIB + f"""
TTL, MAXLEN = ARGV[2], ARGV[3]
local out = {{}}
for i = 4, #ARGV, 8 do
  local id = ARGV[i]
  if ARGV[i + 7] ~= '' then event(id, 'text', ARGV[i + 7]) end
  local written = finish(id, ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[1])
  local joiners, parent, parent_status = {{}}, '', ''
  if written == 1 then
    joiners = settle_joiners(id)
    local meta = redis.call('HMGET', '{JOB.format("")}' .. id, 'parent', 'model')
    if meta[1] then
      parent = meta[1]
      parent_status = settle_parent(parent, meta[2] or '', ARGV[i + 6], ARGV[1])
    end
  end
  table.insert(out, {{written, joiners, parent, parent_status}})
end
return out
"""

# A job ended outside a worker's batch (canceled, aborted or failed at its claim): its joiners and its
# compare parent. ARGV: now, ttl, maxlen, id, its outcome (for the parent).
_AFTER_FINAL = _LIB + f"""
TTL, MAXLEN = ARGV[2], ARGV[3]
local joiners = settle_joiners(ARGV[4])
local meta = redis.call('HMGET', '{JOB.format("")}' .. ARGV[4], 'parent', 'model')
local parent, parent_status = '', ''
if meta[1] then
  parent = meta[1]
  parent_status = settle_parent(parent, meta[2] or '', ARGV[5], ARGV[1])
end
return {{joiners, parent, parent_status}}
"""

# ARGV: now, reason, status, ttl, maxlen, id. Cancel a queued or running job; its status after.
_CANCEL = _LIB + """
TTL, MAXLEN = ARGV[4], ARGV[5]
local key = '""" + JOB.format("") + """' .. ARGV[6]
local st = redis.call('HGET', key, 'status')
if not st then return '' end
if st ~= 'queued' and st ~= 'running' then return st end
redis.call('HSET', key, 'status', ARGV[3], 'completed_at', ARGV[1], 'cancel_reason', ARGV[2])
count_final(key, ARGV[3])
event(ARGV[6], ARGV[3], cjson.encode({status=ARGV[3], reason=ARGV[2]}))
return ARGV[3]
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


@dataclass(frozen=True)
class Start:
    """What a worker may do with a delivered job: `run` it as `attempt`, or not (`final` / `missing`)."""

    action: str
    attempt: int = 0
    status: str | None = None


@dataclass(frozen=True)
class Claim:
    """A delivered job as a worker's claim left it (`JobStore.claim`): `action` is `run` (as
    `attempt`), `final` (already), `ended` (here: aborted or failed; `status` says which) or
    `missing`; `record` as it stands after the claim."""

    job_id: str
    action: str
    attempt: int
    status: str | None
    record: JobRecord | None


@dataclass(frozen=True)
class Result:
    """A worker's result for one job: a final status with its output, error or cancel reason, and
    text still to stream before the end."""

    job_id: str
    attempt: int
    status: JobStatus
    output: dict | None = None
    error: dict | None = None
    reason: str | None = None
    text: str = ""

    def outcome(self) -> dict[str, Any]:
        """What a compare parent records of this child."""
        return _outcome(self.job_id, self.status, self.output, self.error, self.reason)


@dataclass(frozen=True)
class Finished:
    """What writing a result did: `written` (False: fenced out), the joined jobs it settled, and its
    compare parent's status after it (`parent_status` final: this was the last child)."""

    job_id: str
    written: bool
    joiners: list[str]
    parent: str | None
    parent_status: str | None


def _outcome(job_id: str, status: JobStatus, output: dict | None, error: dict | None,
             reason: str | None) -> dict[str, Any]:
    outcome: dict[str, Any] = {"status": status.value, "job_id": job_id}
    if output is not None:
        outcome["output"] = output
    if error is not None:
        outcome["error"] = error
    elif status in (JobStatus.canceled, JobStatus.aborted):
        outcome["error"] = {"code": status.value, "message": reason or status.value}
    return outcome


def outcome_of(record: JobRecord) -> dict[str, Any]:
    return _outcome(record.id, record.status, record.output, record.error, record.cancel_reason)


def _record(job_id: str, raw: list) -> JobRecord | None:
    if not raw:
        return None
    return JobRecord.from_hash(job_id, {_text(raw[i]): _text(raw[i + 1]) for i in range(0, len(raw), 2)})


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
        self._claim = client.register_script(_CLAIM_BATCH)
        self._finish_batch = client.register_script(_FINISH_BATCH)
        self._after_final = client.register_script(_AFTER_FINAL)
        self._cancel = client.register_script(_CANCEL)
        self._join = client.register_script(_JOIN)

    # --- records --------------------------------------------------------------------------

    def create(self, *records: JobRecord) -> None:
        """Write new records (a record born final, a cache answer, with its final event), in one round
        trip. Jobs to queue are admitted by vlmq/admission.py instead."""
        pipe = self.redis.pipeline(transaction=True)
        for record in records:
            key, events = JOB.format(record.id), EVENTS.format(record.id)
            pipe.hset(key, mapping=record.to_hash())
            pipe.expire(key, self.ttl_s)
            if record.status.final:
                data = {"status": record.status.value}
                if record.output is not None:
                    data["output"] = record.output
                pipe.xadd(events, {"event": record.status.value, "data": json.dumps(data)}, maxlen=EVENTS_MAXLEN)
                pipe.expire(events, self.ttl_s)
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
        return JobRecord.from_hash(job_id, {_text(k): _text(v) for k, v in raw.items()})

    def get_many(self, job_ids: Iterable[str]) -> list[JobRecord | None]:
        job_ids = list(job_ids)
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(JOB.format(job_id))
        return [
            JobRecord.from_hash(job_id, {_text(k): _text(v) for k, v in raw.items()}) if raw else None
            for job_id, raw in zip(job_ids, pipe.execute(), strict=True)
        ]

    def statuses(self, job_ids: list[str]) -> list[str | None]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(JOB.format(job_id), "status")
        return [_text(s) for s in pipe.execute()]

    def set_fields(self, job_id: str, **fields: str) -> None:
        self.redis.hset(JOB.format(job_id), mapping=fields)

    def note_load_waits(self, waits: dict[str, float]) -> None:
        """How long each of these jobs waited for its model's weights to load (seconds)."""
        if waits:
            pipe = self.redis.pipeline(transaction=False)
            for job_id, seconds in waits.items():
                pipe.hset(JOB.format(job_id), "load_wait_ms", f"{seconds * 1000:.1f}")
            pipe.execute()

    # --- transitions ----------------------------------------------------------------------

    def claim(self, job_ids: list[str], worker: str, max_attempts: int) -> list[Claim]:
        """A worker takes a batch, in one round trip: each job leaves its lane, and is `run` (now
        running, its attempt counted, its compare parent running too), or not: `final` already,
        `ended` here (its deadline passed: aborted; past `max_attempts`: failed), or `missing`."""
        if not job_ids:
            return []
        reply = self._claim(args=[repr(now()), worker, max_attempts, self.ttl_s, EVENTS_MAXLEN, *job_ids])
        claims = []
        for job_id, action, detail, raw in reply:
            job_id = _text(job_id)
            record = _record(job_id, raw)
            action, detail = _text(action), _text(detail)
            claims.append(Claim(job_id, action, int(detail) if action == "run" else 0,
                                detail if action != "run" else None, record))
        return claims

    def finish_batch(self, results: list[Result]) -> list[Finished]:
        """Write a batch's results, in one round trip, each fenced by its attempt (a stale attempt,
        a canceled or final job is left alone); settle each one's joiners and compare parent."""
        if not results:
            return []
        args: list[Any] = [repr(now()), self.ttl_s, EVENTS_MAXLEN]
        for r in results:
            args += [r.job_id, r.attempt, r.status.value,
                     json.dumps(r.output) if r.output is not None else "",
                     json.dumps(r.error) if r.error is not None else "",
                     r.reason or "", json.dumps(r.outcome()), json.dumps({"text": r.text}) if r.text else ""]
        reply = self._finish_batch(args=args)
        return [Finished(r.job_id, bool(written), [_text(j) for j in joiners], _text(parent) or None,
                         _text(parent_status) or None)
                for r, (written, joiners, parent, parent_status) in zip(results, reply, strict=True)]

    def after_final(self, record: JobRecord) -> Finished:
        """A job ended outside a worker's results (canceled, aborted or failed at its claim): its
        joiners and its compare parent are settled."""
        joiners, parent, parent_status = self._after_final(
            args=[repr(now()), self.ttl_s, EVENTS_MAXLEN, record.id, json.dumps(outcome_of(record))])
        return Finished(record.id, True, [_text(j) for j in joiners], _text(parent) or None,
                        _text(parent_status) or None)

    def start(self, job_id: str, worker: str, max_attempts: int) -> Start:
        """`claim` for one job."""
        (claim,) = self.claim([job_id], worker, max_attempts)
        if claim.action == "run":
            return Start("run", attempt=claim.attempt)
        return Start("final" if claim.action == "ended" else claim.action, status=claim.status)

    def finish(self, job_id: str, attempt: int, status: JobStatus, output: dict | None = None,
               error: dict | None = None) -> bool:
        """`finish_batch` for one job: False when fenced out (stale attempt, canceled, final)."""
        (done,) = self.finish_batch([Result(job_id, attempt, status, output=output, error=error)])
        return done.written

    def cancel(self, job_id: str, reason: str, status: JobStatus = JobStatus.canceled) -> str | None:
        """Cancel a queued or running job. Returns its status afterwards (None: no such job)."""
        result = _text(self._cancel(args=[repr(now()), reason, status.value, self.ttl_s, EVENTS_MAXLEN, job_id]))
        return result or None

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


async def aget(client, job_id: str) -> JobRecord | None:
    """`JobStore.get` with the API's asyncio client."""
    raw = await client.hgetall(JOB.format(job_id))
    if not raw:
        return None
    return JobRecord.from_hash(job_id, {_text(k): _text(v) for k, v in raw.items()})


def implied_events(record: JobRecord) -> list[Event]:
    """The events a job has without a stream entry: `queued`, for every job that was accepted into a
    queue (not one born final: a cache answer's first event is its `succeeded`)."""
    if record.cache in (CacheOutcome.hit, CacheOutcome.semantic_hit):
        return []
    return [Event(QUEUED_EVENT_ID, JobStatus.queued.value, {"status": JobStatus.queued.value})]

