"""`vlmq worker --model NAME`: a Celery worker pinned to one model.

Start-up, in order: read the registry entry; set the process's settings (torch's threads, the GIL's
switch interval, malloc: tasks/tuning.py); announce the worker as
`loading`; load the weights once (`adapter.setup()`); announce `ready` with the weights'
revision and load time; then consume only that model's queue with the solo pool (the model
lives in this one process, no fork after loading). A setup failure is reported on the model
(`GET /v1/models` shows it) and the process exits with status 3 without taking a job.

Micro-batching: one celery-batches task per job type the model runs (tasks/batching.py). The
worker prefetches at most `max_batch_size` messages, which is exactly what its next batch runs; a
batch runs when full, when nothing more is queued (after a short wait scaled to the model's batch
time), or at the latest `max_wait_ms` after its first job arrived.
SIGTERM is Celery's warm shutdown: the batch in hand finishes and is acknowledged; messages
prefetched but not started are given back to the queue.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable

import redis

from vlmq.blobs import BlobStore, blob_store
from vlmq.fleet import EXIT_SETUP_FAILED, HEARTBEAT_S, Fleet, WorkerInfo, WorkerState
from vlmq.jobs import Lane
from vlmq.lanes import Lanes
from vlmq.logs import setup_logging
from vlmq.metrics_store import MetricsStore
from vlmq.notify import Notifier
from vlmq.queues import queue_keys, task_name, worker_queues
from vlmq.redis_conn import sync_client
from vlmq.registry import ModelSpec, load_registry
from vlmq.settings import Settings
from vlmq.store import JobStore
from vlmq.tasks.adapters import check_registry, load_adapter
from vlmq.tasks.app import make_celery, publish
from vlmq.tasks.batching import TICK_S, ModelGate, QueueAwareBatches
from vlmq.tasks.flower import Revocations, batch_failed, outcome_of
from vlmq.tasks.live import LiveJobs
from vlmq.tasks.metrics import WorkerMetrics
from vlmq.tasks.reconcile import Reconciler, sweep_blobs
from vlmq.tasks.runner import JobReport, ModelRunner
from vlmq.tasks.tuning import tune

log = logging.getLogger("vlmq.worker")
#: Batches a worker has in hand at once: one in the model's forward pass, the next one preparing.
PIPELINE = 2


class Heartbeat(threading.Thread):
    """The worker's heartbeat every `HEARTBEAT_S` (with `info`), and what else runs at that pace (`on_beat`)."""

    def __init__(self, fleet: Fleet, info: WorkerInfo | None) -> None:
        super().__init__(daemon=True, name="vlmq-heartbeat")
        self.fleet = fleet
        self.info = info
        self.on_beat: list[Callable[[], None]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            own = [lambda: self.fleet.heartbeat(self.info)] if self.info is not None else []
            for beat in (*own, *self.on_beat):
                try:
                    beat()
                except Exception as exc:  # noqa: BLE001 - Redis away: try again at the next beat
                    log.warning("heartbeat failed: %s", exc)
            self.stopped.wait(HEARTBEAT_S)


def upkeep(cancel: Callable[[str, str], None], client: redis.Redis, blobs: BlobStore, settings: Settings
           ) -> list[Callable[[], None]]:
    """What a model worker (pinned or group) runs at its heartbeat's pace besides the heartbeat:
    Flower's revokes applied through `cancel`, the blob store swept."""
    return [Revocations(cancel).apply,
            lambda: sweep_blobs(client, blobs, settings.job_ttl_s, settings.openai_file_ttl_s)]


def celery_worker(app, hostname: str, queues: list[str]):
    """The Celery worker of a model worker (pinned or group): a pool of `PIPELINE` threads (one batch in
    the model, the next one preparing, tasks/runner.py), prefetching the app's multiplier per thread,
    with task events (Flower)."""
    return app.Worker(hostname=hostname, queues=queues, pool="threads", concurrency=PIPELINE,
                      prefetch_multiplier=app.conf.worker_prefetch_multiplier, loglevel="INFO",
                      without_mingle=True, without_gossip=True, task_events=True)


def register_tasks(app, spec: ModelSpec, run_batch: Callable[[list[str]], list[JobReport]], gate: ModelGate,
                   client: redis.Redis) -> list[str]:
    """One batch task per job type of the model, named `vlmq.<type>.<model>`, running `run_batch` (a
    runner's, or a group worker's that finds the member's runner)."""
    keys = [key for lane in Lane for key in queue_keys(spec.name, lane)]

    def backlog() -> bool:
        try:
            return bool(client.exists(*keys))
        except redis.RedisError:
            return False

    names = []
    cap = max(spec.max_wait_ms, 1) / 1000
    for job_type in spec.tasks:
        name = task_name(job_type, spec.name)

        def run(requests, _name=name):
            job_ids = [request.args[0] for request in requests]
            began = time.monotonic()
            try:
                reports = run_batch(job_ids)
            except Exception as exc:  # acknowledged anyway, as before; Flower shows the error on its jobs
                log.exception("batch of %d jobs raised", len(job_ids))
                return batch_failed(exc, len(job_ids))
            finally:
                app.tasks[_name].batch_took(time.monotonic() - began)
            return [outcome_of(report) for report in reports]  # what Flower shows per job (tasks/flower.py)

        app.task(
            name=name,
            base=QueueAwareBatches,
            bind=False,
            flush_every=spec.max_batch_size,
            flush_interval=TICK_S,
            max_wait=cap,
            idle_wait=cap,
            backlog=staticmethod(backlog),
            gate=gate,
            acks_late=True,
            reject_on_worker_lost=True,
        )(run)
        names.append(name)
    return names


def run_worker(model: str, settings: Settings, hostname: str | None = None) -> int:
    setup_logging("worker", settings.log_format, settings.log_level, model=model)
    tune(settings)
    registry = load_registry(settings)
    spec = registry.get(model)
    name = hostname or f"{model}@{socket.gethostname()}-{os.getpid()}"
    client = sync_client(settings)
    fleet = Fleet(client)
    metrics = WorkerMetrics(MetricsStore(client))
    heartbeat = Heartbeat(fleet, WorkerInfo(name=name, model=model, state=WorkerState.loading, pid=os.getpid()))
    heartbeat.start()

    began, began_at = time.perf_counter(), time.time()
    try:
        check_registry(registry)  # an entry its adapter cannot serve is refused now, not at its first job
        adapter = load_adapter(spec, settings)
        revision = adapter.revision()
    except Exception as exc:  # noqa: BLE001 - any setup failure is reported, then we exit
        heartbeat.stopped.set()
        message = f"{exc.__class__.__name__}: {exc}"
        log.error("model %s failed to load: %s", model, message)
        fleet.report_setup_error(model, name, message)
        return EXIT_SETUP_FAILED
    load_s = time.perf_counter() - began
    metrics.model_loaded(model, load_s)
    heartbeat.info = WorkerInfo(
        name=name, model=model, state=WorkerState.ready, revision=revision, load_s=load_s, pid=os.getpid()
    )
    fleet.heartbeat(heartbeat.info)
    log.info("model %s loaded in %.2fs (revision %s)", model, load_s, revision)

    app = make_celery(settings)
    app.conf.worker_prefetch_multiplier = spec.max_batch_size
    store = JobStore(client, settings.job_ttl_s)
    live = LiveJobs(store, name)
    blobs = blob_store(settings)
    runner = ModelRunner(adapter, store, blobs, settings, name, metrics,
                         Notifier(app.send_task), Lanes(client, settings.job_ttl_s), live,
                         loaded=(began_at, began_at + load_s))
    register_tasks(app, spec, runner.run_batch, runner.gate, client)
    heartbeat.on_beat += upkeep(runner.cancel, client, blobs, settings)
    live.start()
    worker = celery_worker(app, name, worker_queues(model))
    reconciler = Reconciler([model], client, runner.store, runner.lanes, lambda record: publish(app, record),
                            settings.visibility_timeout_s)
    reconciler.start()
    try:
        worker.start()
    finally:
        reconciler.stopped.set()
        heartbeat.stopped.set()
        live.stopped.set()
        with contextlib.suppress(Exception):  # Redis may be gone at shutdown
            fleet.leave(model, name)
    return worker.exitcode or 0


if __name__ == "__main__":  # python -m vlmq.tasks.worker MODEL
    sys.exit(run_worker(sys.argv[1], Settings()))
