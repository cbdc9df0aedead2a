"""Which workers serve which model, in what state, and how deep each model's queue is.

Each worker writes a heartbeat every few seconds:

- ``vlmq:workers:{model}``: sorted set, worker name -> time of its last heartbeat;
- ``vlmq:worker:{name}``: hash, that worker's model, state (``loading | ready | error``), weights
  revision, load seconds, pid; it expires when the heartbeats stop;
- ``vlmq:setup-error:{model}``: the last setup failure of any worker of the model (kept an hour).

A worker is online while its heartbeat is younger than `ONLINE_S`. The API reads these for
``GET /v1/models`` and the cache reads the revision to scope its keys.

A group worker (tasks/group_worker.py) writes the same for each member it holds, under the name
``<worker>/<member>`` (so a member's workers, readiness and revision read as a pinned model's do),
and for itself ``vlmq:group-workers:{group}`` (name -> heartbeat) and its hash: the members it holds
(state, load seconds, weights bytes), its limits and its memory.

A group's workers also keep one use score per member (``vlmq:group-uses:{group}``), across workers
and evictions: the member's job count, each job weighted 2^(t / `HALF_LIFE_JOBS`) where t counts the
group's jobs (``vlmq:group-clock:{group}``), stored as log2. That is forward decay: a recency-weighted
count in which a job's weight halves every `HALF_LIFE_JOBS` jobs the group runs, compared between
members without rescaling anyone's score as time passes. tasks/holdings.py evicts the lowest.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from enum import StrEnum

import redis

from vlmq.jobs import Lane
from vlmq.keyspace import GROUP_CLOCK, GROUP_USES, GROUP_WORKERS, REVISION, SETUP_ERROR, WORKER, WORKERS
from vlmq.queues import queue_keys

#: A worker whose model failed to load exits with this status (a supervisor must not restart it).
EXIT_SETUP_FAILED = 3
HEARTBEAT_S = 3.0
ONLINE_S = 12.0
#: A group member's use score counts a job half as much after the group ran this many more jobs.
HALF_LIFE_JOBS = 256
#: Use scores are forgotten after a week without a job in their group.
USES_TTL_S = 7 * 86400

# KEYS: GROUP_USES, GROUP_CLOCK; ARGV: member, jobs, half-life, ttl. log2(2^old + jobs * 2^(clock / half-life)).
_NOTE_USES = """
local jobs = tonumber(ARGV[2])
local clock = redis.call('INCRBY', KEYS[2], jobs)
local score = clock / tonumber(ARGV[3]) + math.log(jobs) / math.log(2)
local old = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
if old then
  local high, low = math.max(old, score), math.min(old, score)
  score = high + math.log(1 + 2 ^ (low - high)) / math.log(2)
end
redis.call('ZADD', KEYS[1], score, ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return tostring(score)
"""


class WorkerState(StrEnum):
    loading = "loading"
    ready = "ready"
    error = "error"


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    model: str
    state: WorkerState
    revision: str | None = None
    load_s: float | None = None
    pid: int | None = None
    last_seen: float = 0.0


@dataclass(frozen=True)
class ModelFleet:
    model: str
    workers: list[WorkerInfo] = field(default_factory=list)
    depth: dict[Lane, int] = field(default_factory=dict)
    setup_error: str | None = None
    revision: str | None = None

    @property
    def queue_depth(self) -> int:
        return sum(self.depth.values())

    @property
    def ready_workers(self) -> int:
        return sum(1 for w in self.workers if w.state is WorkerState.ready)


def member_worker(worker: str, model: str) -> str:
    """The name a group worker serves a member under: `<worker>/<model>`."""
    return f"{worker}/{model}"


@dataclass(frozen=True)
class HeldModel:
    """A member a group worker holds (loading, ready, or `error`: its load failed, its jobs fail)."""

    model: str
    state: WorkerState
    load_s: float | None = None
    weights_bytes: int = 0
    revision: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class GroupWorkerInfo:
    name: str
    group: str
    pid: int
    held: tuple[HeldModel, ...] = ()
    max_loaded: int = 0
    max_memory_bytes: int | None = None
    rss_bytes: int = 0
    peak_rss_bytes: int = 0
    loads: int = 0
    evictions: int = 0
    last_seen: float = 0.0

    def member_worker(self, model: str) -> str:
        return member_worker(self.name, model)


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class Fleet:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._note_uses = client.register_script(_NOTE_USES)

    # --- written by workers ---------------------------------------------------------------

    def heartbeat(self, info: WorkerInfo, pipe: redis.client.Pipeline | None = None) -> None:
        """A worker's heartbeat (sent now, or added to `pipe`)."""
        stamp = time.time()
        own = pipe is None
        pipe = self.redis.pipeline(transaction=False) if pipe is None else pipe
        pipe.zadd(WORKERS.format(info.model), {info.name: stamp})
        pipe.zremrangebyscore(WORKERS.format(info.model), 0, stamp - 10 * ONLINE_S)
        mapping = {"model": info.model, "state": info.state.value, "pid": str(info.pid or 0), "seen": repr(stamp)}
        if info.revision:
            mapping["revision"] = info.revision
            pipe.set(REVISION.format(info.model), info.revision)
        if info.load_s is not None:
            mapping["load_s"] = f"{info.load_s:.3f}"
        pipe.hset(WORKER.format(info.name), mapping=mapping)
        pipe.expire(WORKER.format(info.name), int(ONLINE_S * 2))
        if info.state is WorkerState.ready:
            pipe.delete(SETUP_ERROR.format(info.model))
        if own:
            pipe.execute()

    def group_heartbeat(self, info: GroupWorkerInfo) -> None:
        """The group worker's own entry, and one per member it holds (as a pinned worker's), at once."""
        pipe = self.redis.pipeline(transaction=False)
        for held in info.held:
            self.heartbeat(WorkerInfo(name=info.member_worker(held.model), model=held.model, state=held.state,
                                      revision=held.revision, load_s=held.load_s, pid=info.pid), pipe)
        stamp = time.time()
        holds = [{"model": h.model, "state": h.state.value, "load_s": h.load_s, "weights_bytes": h.weights_bytes,
                  **({"error": h.error} if h.error else {})} for h in info.held]
        pipe.zadd(GROUP_WORKERS.format(info.group), {info.name: stamp})
        pipe.zremrangebyscore(GROUP_WORKERS.format(info.group), 0, stamp - 10 * ONLINE_S)
        pipe.hset(WORKER.format(info.name), mapping={
            "group": info.group, "state": WorkerState.ready.value, "pid": str(info.pid), "seen": repr(stamp),
            "holds": json.dumps(holds), "max_loaded": str(info.max_loaded),
            "max_memory_bytes": str(info.max_memory_bytes or 0), "rss_bytes": str(info.rss_bytes),
            "peak_rss_bytes": str(info.peak_rss_bytes), "loads": str(info.loads), "evictions": str(info.evictions),
        })
        pipe.expire(WORKER.format(info.name), int(ONLINE_S * 2))
        pipe.execute()

    def note_uses(self, group: str, member: str, jobs: int) -> float:
        """`member` of `group` ran `jobs` jobs: its new use score."""
        return float(self._note_uses(keys=[GROUP_USES.format(group), GROUP_CLOCK.format(group)],
                                     args=[member, jobs, HALF_LIFE_JOBS, USES_TTL_S]))

    def uses(self, group: str) -> dict[str, float]:
        """Each member's use score (a member that never ran a job has none)."""
        return {_text(member): score for member, score in
                self.redis.zrange(GROUP_USES.format(group), 0, -1, withscores=True)}

    def leave_group(self, info: GroupWorkerInfo) -> None:
        for held in info.held:
            self.leave(held.model, info.member_worker(held.model))
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrem(GROUP_WORKERS.format(info.group), info.name)
        pipe.delete(WORKER.format(info.name))
        pipe.execute()

    def leave(self, model: str, name: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrem(WORKERS.format(model), name)
        pipe.delete(WORKER.format(name))
        pipe.execute()

    def report_setup_error(self, model: str, name: str, message: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(SETUP_ERROR.format(model), json.dumps({"worker": name, "message": message, "at": time.time()}), ex=3600)
        pipe.zrem(WORKERS.format(model), name)
        pipe.delete(WORKER.format(name))
        pipe.execute()

    # --- read by the API ------------------------------------------------------------------

    def revision(self, model: str) -> str | None:
        return _text(self.redis.get(REVISION.format(model)))

    def queue_depth(self, model: str, lane: Lane | None = None) -> int:
        """Messages waiting in one lane of the model (both lanes when `lane` is None)."""
        pipe = self.redis.pipeline(transaction=False)
        for each in [lane] if lane else list(Lane):
            for key in queue_keys(model, each):
                pipe.llen(key)
        return sum(pipe.execute())

    def holders(self, models: list[str]) -> dict[str, list[str]]:
        """The online workers of each model (pinned, or a group worker's `<worker>/<model>`)."""
        since = time.time() - ONLINE_S
        pipe = self.redis.pipeline(transaction=False)
        for model in models:
            pipe.zrangebyscore(WORKERS.format(model), since, "+inf")
        return {model: [_text(n) for n in names] for model, names in zip(models, pipe.execute(), strict=True)}

    def describe_groups(self, groups: list[str]) -> dict[str, list[GroupWorkerInfo]]:
        """The online group workers of each group, with what each holds."""
        since = time.time() - ONLINE_S
        pipe = self.redis.pipeline(transaction=False)
        for group in groups:
            pipe.zrangebyscore(GROUP_WORKERS.format(group), since, "+inf")
        names = {group: [_text(n) for n in found] for group, found in zip(groups, pipe.execute(), strict=True)}
        pipe = self.redis.pipeline(transaction=False)
        for group in groups:
            for name in names[group]:
                pipe.hgetall(WORKER.format(name))
        raw_workers = iter(pipe.execute())
        described: dict[str, list[GroupWorkerInfo]] = {}
        for group in groups:
            described[group] = []
            for name in names[group]:
                raw = {_text(k): _text(v) for k, v in next(raw_workers).items()}
                if not raw:
                    continue
                held = tuple(HeldModel(model=h["model"], state=WorkerState(h["state"]), load_s=h.get("load_s"),
                                       weights_bytes=h.get("weights_bytes", 0), error=h.get("error"))
                             for h in json.loads(raw.get("holds") or "[]"))
                described[group].append(GroupWorkerInfo(
                    name=name, group=group, pid=int(raw.get("pid", 0)), held=held,
                    max_loaded=int(raw.get("max_loaded", 0)), max_memory_bytes=int(raw.get("max_memory_bytes", 0)) or None,
                    rss_bytes=int(raw.get("rss_bytes", 0)), peak_rss_bytes=int(raw.get("peak_rss_bytes", 0)),
                    loads=int(raw.get("loads", 0)), evictions=int(raw.get("evictions", 0)),
                    last_seen=float(raw.get("seen", 0))))
        return described

    def describe(self, models: list[str]) -> dict[str, ModelFleet]:
        """Workers, queue depth and setup error of each model, in two round trips."""
        since = time.time() - ONLINE_S
        pipe = self.redis.pipeline(transaction=False)
        lanes = list(Lane)
        per_lane = len(queue_keys("x", Lane.interactive))
        for model in models:
            pipe.zrangebyscore(WORKERS.format(model), since, "+inf")
            for lane in lanes:
                for key in queue_keys(model, lane):
                    pipe.llen(key)
            pipe.get(SETUP_ERROR.format(model))
            pipe.get(REVISION.format(model))
        replies = pipe.execute()
        width = 1 + per_lane * len(lanes) + 2
        names: dict[str, list[str]] = {}
        partial: dict[str, tuple[dict[Lane, int], str | None, str | None]] = {}
        for i, model in enumerate(models):
            chunk = replies[i * width : (i + 1) * width]
            names[model] = [_text(n) for n in chunk[0]]
            error = json.loads(chunk[-2])["message"] if chunk[-2] else None
            depth = {lane: sum(chunk[1 + j * per_lane : 1 + (j + 1) * per_lane]) for j, lane in enumerate(lanes)}
            partial[model] = (depth, error, _text(chunk[-1]))
        pipe = self.redis.pipeline(transaction=False)
        for model in models:
            for name in names[model]:
                pipe.hgetall(WORKER.format(name))
        raw_workers = iter(pipe.execute())
        fleets = {}
        for model in models:
            workers = []
            for name in names[model]:
                raw = {_text(k): _text(v) for k, v in next(raw_workers).items()}
                if not raw:
                    continue
                workers.append(
                    WorkerInfo(
                        name=name,
                        model=model,
                        state=WorkerState(raw.get("state", "loading")),
                        revision=raw.get("revision"),
                        load_s=float(raw["load_s"]) if raw.get("load_s") else None,
                        pid=int(raw.get("pid", 0)) or None,
                        last_seen=float(raw.get("seen", 0)),
                    )
                )
            depth, error, revision = partial[model]
            fleets[model] = ModelFleet(model, workers, depth, error, revision)
        return fleets
