"""`vlmq worker --group NAME`: a Celery worker for a model group, loading members on demand.

A group (vlmq/registry.py, `[groups.<name>]`) is many models, a training run's checkpoints say, served
by a few group workers, each holding at most `max_loaded` members (and, with `max_memory_gb`, weights
within that budget). Jobs for a member are submitted as for any model, to the member's own queues.

Routing. A group worker consumes the queues of the members it holds, and only those: a member's jobs
go to the worker that holds it, with no broker hop of their own. A member whose holders do not keep up
(its oldest job waited `HELP_S` while they are all ready) is loaded by another group worker too, if
that one has a free slot (or only members without jobs to evict). A member nobody holds has its jobs
waiting in its queues; every `LOAD_TICK_S` each group worker reads the members' waiting jobs (their
lanes' pending sets, vlmq/lanes.py) and who holds which (vlmq/fleet.py), and takes the member whose
oldest job has waited longest among those nobody holds. The worker whose room for it costs least
loads it (tasks/holdings.py: a free slot costs nothing, else the use score of the member it would
evict, members with jobs queued spared; the others' costs are read from what they announce, and one
busy loading does not count), as one cache of all the workers' slots would; once the job has waited
`STARVE_S`, any worker does. It makes room, takes the member's load lock (one loader per
member across the fleet), announces it (`loading`), loads it in this thread while its other members
keep serving, then starts consuming its queues (interactive lanes of every member before any bulk
lane, as a pinned worker's). Batching, lanes and fair share are a pinned worker's: one batch task per
(job type, member), each member's own `ModelGate`. A job that waited for its member's load says so
(`load_wait_ms`).

Eviction: stop consuming the member's queues, let the batches it already took finish, stop their
flush timers, drop the weights (freed as their last reference goes; CUDA cache emptied, freed heap
given back to the system).

At start, before it announces itself, a group worker loads its group's first member once and drops
it: the seconds of imports a first load pays are paid there, as a pinned worker pays them at start.

A member whose load fails is reported on the member (`GET /v1/models` shows the setup error) and held
without weights for `FAILED_HOLD_S`: its jobs are taken and failed with that error (code
`model_unavailable`), and the worker goes on. A worker killed while loading took none of the
member's jobs: they wait in its queues until another group worker sees no live holder (its
announcement expires after `ONLINE_S`) and loads it.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import resource
import socket
import statistics
import threading
import time
import weakref
from functools import partial

import redis
from celery import signals

from vlmq.blobs import blob_store
from vlmq.fleet import HEARTBEAT_S, Fleet, GroupWorkerInfo, WorkerState, member_worker
from vlmq.jobs import JobStatus, Lane
from vlmq.keyspace import LOAD_LOCK, PENDING, WORKER
from vlmq.lanes import Lanes
from vlmq.logs import setup_logging
from vlmq.metrics_store import MetricsStore
from vlmq.notify import Notifier
from vlmq.queues import worker_queues
from vlmq.redis_conn import sync_client
from vlmq.registry import GroupSpec, ModelSpec, Registry, load_registry
from vlmq.settings import Settings
from vlmq.store import JobStore
from vlmq.tasks.adapters import check_registry, load_adapter
from vlmq.tasks.adapters.base import ItemError, ModelAdapter
from vlmq.tasks.app import make_celery, publish
from vlmq.tasks.batching import ModelGate
from vlmq.tasks.holdings import Holdings, cheaper_elsewhere, room_cost
from vlmq.tasks.live import LiveJobs
from vlmq.tasks.metrics import WorkerMetrics
from vlmq.tasks.reconcile import Reconciler
from vlmq.tasks.runner import JobReport, ModelRunner
from vlmq.tasks.tuning import trim_malloc, tune
from vlmq.tasks.worker import Heartbeat, celery_worker, register_tasks, upkeep

log = logging.getLogger("vlmq.worker")
LOAD_TICK_S = 0.1
POLL_S = 0.1
#: A member whose oldest job waited this long may evict members that still have jobs queued.
STARVE_S = 2.0
#: A member whose oldest job waited this long while its holders are all ready is behind: a group
#: worker with a free slot loads it too (after `HELP_CONFIRM_S` of seeing it so).
HELP_S = 5.0
HELP_CONFIRM_S = 1.0
#: How long a member that failed to load has its new jobs failed before a load is tried again.
FAILED_HOLD_S = 30.0


class ModelUnavailable(ItemError):
    code = "model_unavailable"


class Unloadable(ModelAdapter):
    """A member whose load failed: every job it is given fails with the setup error."""

    tasks = frozenset()

    def __init__(self, spec: ModelSpec, error: str) -> None:
        super().__init__(spec, spec.source)
        self.error = error

    def setup(self) -> None:  # pragma: no cover - never loaded
        pass

    def prepare(self, items):
        raise ModelUnavailable(f"model {self.spec.name} could not be loaded: {self.error}")

    def predict(self, batch, hooks):
        raise ModelUnavailable(f"model {self.spec.name} could not be loaded: {self.error}")


def _rss_bytes() -> tuple[int, int]:
    """(resident now, peak resident) of this process."""
    with open("/proc/self/statm") as f:
        resident = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return resident, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _release_memory(adapter: weakref.ref) -> None:
    """Once the last reference to an adapter is dropped: its weights are freed by reference counting;
    a full collection (a quarter second with transformers loaded) only if a cycle still holds it."""
    if adapter() is not None:
        gc.collect()
    with contextlib.suppress(Exception):
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    trim_malloc()


class GroupWorker:
    def __init__(self, spec: GroupSpec, registry: Registry, settings: Settings, name: str,
                 client: redis.Redis) -> None:
        self.spec = spec
        self.registry = registry
        self.settings = settings
        self.name = name
        self.client = client
        self.fleet = Fleet(client)
        self.metrics = WorkerMetrics(MetricsStore(client))
        self.store = JobStore(client, settings.job_ttl_s)
        self.blobs = blob_store(settings)
        self.lanes = Lanes(client, settings.job_ttl_s)
        self.live = LiveJobs(self.store, name)
        self.holdings = Holdings(spec.max_loaded, spec.max_memory_bytes)
        self.gates = {member: ModelGate() for member in spec.members}
        self.app = make_celery(settings)
        self.app.conf.worker_prefetch_multiplier = max(registry.get(m).max_batch_size for m in spec.members)
        # kombu sees queues added while a fetch (BRPOP) is blocked only when it returns: within 0.1 s, not 1 s
        self.app.conf.broker_transport_options = {**self.app.conf.broker_transport_options,
                                                  "polling_interval": POLL_S}
        self.notifier = Notifier(self.app.send_task)
        self.task_names: dict[str, list[str]] = {}
        for member in spec.members:
            self.task_names[member] = register_tasks(self.app, registry.get(member), partial(self.run_batch, member),
                                                     self.gates[member], client)
        self.consumer = None
        self._behind_since: dict[str, float] = {}
        self.ready = threading.Event()
        self.stopped = threading.Event()

    # --- what the fleet sees ------------------------------------------------------------------

    def info(self) -> GroupWorkerInfo:
        rss, peak = _rss_bytes()
        return GroupWorkerInfo(name=self.name, group=self.spec.name, pid=os.getpid(), held=self.holdings.views(),
                               max_loaded=self.spec.max_loaded, max_memory_bytes=self.spec.max_memory_bytes,
                               rss_bytes=rss, peak_rss_bytes=peak, loads=self.holdings.loads,
                               evictions=self.holdings.evictions)

    def announce(self) -> None:
        self.fleet.group_heartbeat(self.info())

    # --- batches (the pool's threads) ---------------------------------------------------------

    def run_batch(self, member: str, job_ids: list[str]) -> list[JobReport]:
        held = self.holdings.get(member)
        if held is None or held.runner is None:  # a message taken as its member left: back to its queue
            for record in self.store.get_many(job_ids):
                if record is not None and record.status is JobStatus.queued:
                    publish(self.app, record)
            return [JobReport(None, "not run: its model left this worker; queued again") for _ in job_ids]
        self.holdings.touch(member)
        with contextlib.suppress(redis.RedisError):  # a lost count must not fail the batch
            self.fleet.note_uses(self.spec.name, member, len(job_ids))
        return held.runner.run_batch(job_ids)

    # --- the queues consumed, changed in the consumer's event loop ------------------------------

    def _in_loop(self, change) -> None:
        done, errors = threading.Event(), []

        def call() -> None:
            try:
                change(self.consumer)
            except Exception as exc:  # noqa: BLE001 - raised in the loader thread below
                errors.append(exc)
            finally:
                done.set()

        self.consumer.hub.call_soon(call)
        if not done.wait(30):
            raise RuntimeError("the worker's event loop did not answer in 30 s")
        if errors:
            raise errors[0]

    def consume(self, member: str) -> None:
        def add(consumer) -> None:
            for queue in worker_queues(member):
                consumer.add_task_queue(queue, exchange=queue, exchange_type="direct", routing_key=queue)
            channel = consumer.task_consumer.channel
            # every member's interactive lane before any bulk lane (kombu polls its list in order)
            channel._active_queues.sort(key=lambda queue: queue.endswith(f".{Lane.bulk.value}"))
            channel._update_queue_cycle()

        self._in_loop(add)

    def stop_consuming(self, member: str) -> None:
        def cancel(consumer) -> None:
            for queue in worker_queues(member):
                consumer.cancel_task_queue(queue)

        self._in_loop(cancel)

    def stop_flushing(self, member: str) -> None:
        """Cancel the member's batch tasks' flush timers (celery-batches starts one at a task's first
        message and runs it every 0.5 ms for good: 40 members' would take a core); the next message
        starts it again."""
        def cancel(_consumer) -> None:
            for name in self.task_names[member]:
                task = self.app.tasks[name]
                if task._tref is not None and not task._buffer.qsize() and not task._pending.qsize():
                    task._tref.cancel()
                    task._tref = None

        self._in_loop(cancel)

    def _drained(self, member: str) -> bool:
        """No message of the member buffered or pending in its batch tasks, no batch of it running."""
        for name in self.task_names[member]:
            task = self.app.tasks[name]
            if task._buffer.qsize() or task._pending.qsize():
                return False
        return self.gates[member].in_flight == 0

    # --- loading and evicting (the loader thread) ---------------------------------------------

    def warm_up(self) -> None:
        """Load the group's first member once and drop it, before announcing this worker: the imports
        and lazy modules a first load pays (seconds) are paid at start, as a pinned worker's are."""
        spec = self.registry.get(self.spec.members[0])
        began = time.perf_counter()
        try:
            adapter = load_adapter(spec, self.settings)
        except Exception as exc:  # noqa: BLE001 - its jobs will say so; the others are served
            log.warning("group %s: warm-up load of %s failed: %s", self.spec.name, spec.name, exc)
            return
        ref = weakref.ref(adapter)
        del adapter
        _release_memory(ref)
        log.info("group %s: warmed up in %.2fs (%s loaded and dropped)", self.spec.name,
                 time.perf_counter() - began, spec.name)

    def loader(self) -> None:
        self.ready.wait()
        while not self.stopped.is_set():
            loaded = False
            try:
                loaded = self.step()
            except redis.RedisError as exc:
                log.warning("group %s: Redis unavailable (%s); trying again", self.spec.name, exc)
            except Exception:
                log.exception("group %s: load step failed", self.spec.name)
            if not loaded:  # after a load, look again at once: more members may be waiting
                self.stopped.wait(LOAD_TICK_S)

    def waiting(self) -> dict[str, float]:
        """Members with jobs waiting: member -> when its oldest waiting job was admitted."""
        pipe = self.client.pipeline(transaction=False)
        for member in self.spec.members:
            for lane in Lane:
                pipe.zrange(PENDING.format(member, lane.value), 0, 0, withscores=True)
        replies = iter(pipe.execute())
        oldest = {}
        for member in self.spec.members:
            firsts = [entries[0][1] for entries in (next(replies) for _ in Lane) if entries]
            if firsts:
                oldest[member] = min(firsts)
        return oldest

    def step(self) -> bool:
        """One look at the group: drop failed members whose hold ended, load the member waiting longest;
        whether it loaded one."""
        now = time.monotonic()
        for member in [m for m in self.holdings.members.values() if not m.counted and m.failed_until <= now]:
            self.evict(member.name)
        waiting = self.waiting()
        unheld = [m for m in waiting if m not in self.holdings]
        if not unheld:
            return False
        holders = self.fleet.holders(unheld)
        stamp = time.time()
        orphans = sorted((m for m in unheld if not holders[m]), key=waiting.get)
        behind = self._behind([m for m in unheld if holders[m]], holders, waiting, stamp)
        if not orphans and not behind:
            return False
        scores = self.fleet.uses(self.spec.name)
        others = self._others() if orphans else []
        backlogged = set(waiting)
        for member, helping in [*((m, False) for m in orphans), *((m, True) for m in behind)]:
            starving = not helping and stamp - waiting[member] >= STARVE_S
            spec = self.registry.get(member)
            incoming = self.holdings.estimate(member, spec.resolved_source(self.settings))
            victims = self.holdings.victims(incoming, backlogged, starving, scores)
            if victims is None:
                if helping:
                    continue  # help only with room to spare: no member with jobs queued leaves for it
                return False
            if not helping and not starving:
                cost = room_cost([self.holdings.get(v).slot() for v in victims], scores)
                if cheaper_elsewhere(others, incoming, backlogged, scores, cost):
                    continue  # the worker whose room costs least takes it, as one cache of all their slots would
            if not self.client.set(LOAD_LOCK.format(member), self.name, nx=True, px=int(HEARTBEAT_S * 4000)):
                continue  # another group worker is taking it
            try:
                if set(self.fleet.holders([member])[member]) != set(holders[member]):
                    continue  # taken (or helped) meanwhile
                for victim in victims:
                    self.evict(victim)
                self.load(spec)
            finally:
                self.client.delete(LOAD_LOCK.format(member))
            return True  # one load per step: the next step sees what changed meanwhile
        return False

    def _others(self) -> list[GroupWorkerInfo]:
        """The group's other online workers that are not loading a member (so can load one now)."""
        return [worker for worker in self.fleet.describe_groups([self.spec.name])[self.spec.name]
                if worker.name != self.name and all(h.state is not WorkerState.loading for h in worker.held)]

    def _behind(self, held_elsewhere: list[str], holders: dict[str, list[str]], waiting: dict[str, float],
                stamp: float) -> list[str]:
        """Members whose holders do not keep up: every holder ready, and the oldest job waiting
        `HELP_S` or more on two looks `HELP_CONFIRM_S` apart (not a backlog that a load just left)."""
        late = sorted((m for m in held_elsewhere if stamp - waiting[m] >= HELP_S), key=waiting.get)
        for member in list(self._behind_since):
            if member not in late:
                del self._behind_since[member]
        if not late:
            return []
        pipe = self.client.pipeline(transaction=False)
        for member in late:
            for name in holders[member]:
                pipe.hget(WORKER.format(name), "state")
        states = iter(pipe.execute())
        found = []
        for member in late:
            mine = [next(states) for _ in holders[member]]  # each member's holders' states, in order
            if all(state in (b"ready", "ready") for state in mine):
                since = self._behind_since.setdefault(member, stamp)
                if stamp - since >= HELP_CONFIRM_S:
                    found.append(member)
            else:
                self._behind_since.pop(member, None)
        return found

    def load(self, spec: ModelSpec) -> None:
        member = spec.name
        self.holdings.begin(member)
        self.announce()  # others now see a holder: they leave this member alone
        log.info("group %s: loading %s", self.spec.name, member)
        began, began_at = time.perf_counter(), time.time()
        try:
            adapter = load_adapter(spec, self.settings)
            revision = adapter.revision()
        except Exception as exc:  # noqa: BLE001 - the member fails its jobs; the worker goes on
            message = f"{exc.__class__.__name__}: {exc}"
            log.error("group %s: %s failed to load: %s", self.spec.name, member, message)
            self.fleet.report_setup_error(member, member_worker(self.name, member), message)
            self.holdings.failed(member, self._runner(Unloadable(spec, message), None), message, FAILED_HOLD_S)
            self.announce()
            self.consume(member)
            return
        load_s = time.perf_counter() - began
        self._seed_batch_times(member)
        runner = self._runner(adapter, (began_at, began_at + load_s))
        self.holdings.loaded(member, runner, adapter.weights_bytes(), load_s, revision)
        self.metrics.model_loaded(member, load_s)
        self.announce()
        self.consume(member)
        log.info("group %s: %s loaded in %.2fs (%d held)", self.spec.name, member, load_s,
                 len(self.holdings.counted()))
        for victim in self.holdings.over_budget(keep=member, scores=self.fleet.uses(self.spec.name)):
            self.evict(victim)

    def _seed_batch_times(self, member: str) -> None:
        """A member's first batches wait for more jobs as long as its batch time says (tasks/batching.py);
        never run, it has none and would wait the cap: it starts from the batch time of a member of the
        same job type that has run (a group's members are alike: checkpoints of one model)."""
        for name in self.task_names[member]:
            task = self.app.tasks[name]
            if task._batch_s is not None:
                continue
            job_type = name.split(".")[1]
            known = [t._batch_s for m, names in self.task_names.items() if m != member for n in names
                     if n.split(".")[1] == job_type and (t := self.app.tasks[n])._batch_s is not None]
            if known:
                task.batch_took(statistics.median(known))

    def _runner(self, adapter: ModelAdapter, loaded: tuple[float, float] | None) -> ModelRunner:
        name = adapter.spec.name
        return ModelRunner(adapter, self.store, self.blobs, self.settings, member_worker(self.name, name), self.metrics,
                           self.notifier, self.lanes, self.live, gate=self.gates[name], loaded=loaded)

    def evict(self, member: str) -> None:
        held = self.holdings.get(member)
        if held is None:
            return
        held.leaving = True
        self.stop_consuming(member)
        settled = 0
        while settled < 2:  # a fetch in flight as the queues were cancelled may still deliver one
            settled = settled + 1 if self._drained(member) else 0
            time.sleep(0.005)
        self.stop_flushing(member)
        self.holdings.remove(member)
        self.fleet.leave(member, member_worker(self.name, member))
        self.announce()
        adapter = weakref.ref(held.runner.adapter)
        held.runner = None
        del held
        _release_memory(adapter)
        log.info("group %s: %s evicted", self.spec.name, member)

    def cancel(self, job_id: str, reason: str) -> None:
        """A Flower revoke: through any runner (a cancel needs the store, lanes and notifier, which they
        share, not the weights), or one without weights when nothing is held."""
        runner = next((m.runner for m in self.holdings.members.values() if m.runner is not None), None)
        if runner is None:
            runner = self._runner(Unloadable(self.registry.get(self.spec.members[0]), "not loaded"), None)
        runner.cancel(job_id, reason)


def run_group_worker(group: str, settings: Settings, hostname: str | None = None) -> int:
    setup_logging("worker", settings.log_format, settings.log_level, model=group)
    from transformers.utils import logging as hf_logging

    tune(settings)
    hf_logging.disable_progress_bar()  # one per load: noise in the worker's log
    registry = load_registry(settings)
    spec = registry.groups[group]  # a group with members (the CLI checks)
    check_registry(registry)
    name = hostname or f"{group}@{socket.gethostname()}-{os.getpid()}"
    client = sync_client(settings)
    worker = GroupWorker(spec, registry, settings, name, client)

    def on_ready(sender=None, **_kwargs) -> None:
        worker.consumer = sender
        worker.ready.set()

    worker.warm_up()
    signals.worker_ready.connect(on_ready, weak=False)
    heartbeat = Heartbeat(worker.fleet, None)
    heartbeat.on_beat = [worker.announce, *upkeep(worker.cancel, client, worker.blobs, settings)]
    worker.announce()
    heartbeat.start()
    worker.live.start()
    loader = threading.Thread(target=worker.loader, daemon=True, name="vlmq-loader")
    loader.start()
    reconciler = Reconciler(list(spec.members), client, worker.store, worker.lanes,
                            lambda record: publish(worker.app, record), settings.visibility_timeout_s)
    reconciler.start()
    # nothing is sent to its first queue: member queues are added as members load
    consumer = celery_worker(worker.app, name, [f"vlmq.{group}.group"])
    try:
        consumer.start()
    finally:
        worker.stopped.set()
        reconciler.stopped.set()
        heartbeat.stopped.set()
        worker.live.stopped.set()
        with contextlib.suppress(Exception):  # Redis may be gone at shutdown
            worker.fleet.leave_group(worker.info())
    return consumer.exitcode or 0

