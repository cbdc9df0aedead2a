"""Flower and vlmq: per-job Celery events from micro-batches, fresh worker data, revokes as cancels.

celery-batches buffers task messages and runs many of them in one call; unlike Celery's default
strategy it sends no task events and leaves the worker's counters alone, so Flower saw no tasks,
every worker processed 0 and `flower_events_total` never appeared. `JobEvents` gives each job of a
batch (each task message; its task id is the job id) what Celery gives a plain task:

- `task-received` when the message is buffered, and the worker's reserved list;
- `task-started` when its batch starts, and the worker's processed counts (`inspect stats` total,
  the `processed` of its heartbeats);
- `task-succeeded` or `task-failed` when its batch returns, with the rule of `outcome_of`.

All of them go through the consumer's event dispatcher, built where they happen (a message's received
event in the consumer's thread, a batch's started and finished events in a pool thread) and published
by `EventPublisher`'s thread in the order they were built, whatever is queued together as one
`task.multi` message, under the dispatcher's mutex (not through its buffer, which the consumer's
thread flushes: an event appended while it flushes is lost). One ordered path matters to Flower: a
started event that overtook its received event would be counted under no task name. Neither the
consumer nor the batch waits for a Redis round trip (the batch's was 0.3 ms of a lone job's path).
A few messages per batch, never one per token.

Flower's `/api/workers` holds `inspect` replies, asked at Flower's start and on `?refresh=1` only:
a worker that started later (a model still loading when Flower started), or was busy in a batch
longer than the inspect timeout, was missing, and its counts never moved. `run_flower` starts
Flower with `WorkerRefresh`, which inspects the workers again whenever the events show an alive
worker that `/api/workers` lacks, or whose heartbeat's processed count differs from it.

A revoke from Flower (`POST /api/task/revoke/<job id>`) is Celery's broadcast, which each worker
keeps in memory (`worker_state.revoked`) and which celery-batches never checks. `Revocations`, run
on every worker's heartbeat, cancels each newly revoked job in the job store (reason "revoked from
Flower"): a queued job never runs whichever worker later takes it (one started after the revoke
too), a running generation stops at its next token, webhooks and the lane are settled as for
`POST /v1/jobs/{id}/cancel`.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celery.events.event import Event
from celery.utils.time import utcoffset
from celery.worker import state as worker_state

from vlmq.jobs import JobStatus

if TYPE_CHECKING:
    from celery import Celery

    from vlmq.tasks.runner import JobReport

log = logging.getLogger("vlmq.worker")
flower_log = logging.getLogger("vlmq.flower")

TEXT_LIMIT = 1000  # characters of an error message in a task-failed event
REFRESH_S = 5.0  # how often Flower compares the workers its events show with its inspect data


@dataclass(frozen=True)
class Outcome:
    """What Flower shows for one job of a batch: FAILURE with `text` as the exception, or SUCCESS with it as result."""

    failed: bool
    text: str


def outcome_of(report: JobReport) -> Outcome:
    """The rule: Flower fails a task exactly when its batch made its job `failed` in vlmq.

    - ended `failed` here (model error, invalid image, invalid output, attempts exhausted): FAILURE,
      exception `<error code>: <message>`;
    - ended `succeeded`: SUCCESS, result `succeeded`; ended `canceled` / `aborted` (canceled while it
      ran, its deadline passed): SUCCESS, result `<status>: <reason>`;
    - not run (already final before its batch: a duplicate delivery, a job canceled while queued; no
      such job) or its result fenced out (a newer attempt owns the job): SUCCESS, result saying so.
    """
    if report.status == JobStatus.failed.value:
        return Outcome(True, report.detail[:TEXT_LIMIT])
    if report.status == JobStatus.succeeded.value:
        return Outcome(False, "succeeded")
    if report.status is not None:
        return Outcome(False, f"{report.status}: {report.detail}" if report.detail else report.status)
    return Outcome(False, report.detail)


def batch_failed(error: BaseException, jobs: int) -> list[Outcome]:
    """The batch call itself raised: each of its jobs is a FAILURE with that error."""
    return [Outcome(True, f"batch_error: {error.__class__.__name__}: {error}"[:TEXT_LIMIT])] * jobs


class JobEvents:
    """Celery's per-task events and worker counters, for the requests of one batch task.

    Requests are never registered as *active*: with the solo pool nothing can look while a batch
    runs, and an active request is one that a cold shutdown would try to terminate.
    """

    def __init__(self, task: Any, consumer: Any) -> None:
        self.task = task
        self.consumer = consumer

    def _dispatcher(self) -> Any | None:
        dispatcher = getattr(self.consumer, "event_dispatcher", None)  # replaced on reconnection: read it each time
        if dispatcher is None or not dispatcher.enabled or not self.task.send_events:
            return None
        return dispatcher

    def received(self, request: Any) -> None:
        worker_state.task_reserved(request)
        dispatcher = self._dispatcher()
        if dispatcher is None:
            return
        delivery = request.delivery_info or {}
        self._publish(dispatcher, [("task-received", {
            "uuid": request.id, "name": request.name, "args": request.argsrepr, "kwargs": request.kwargsrepr,
            "root_id": request.root_id, "parent_id": request.parent_id,
            "retries": request.request_dict.get("retries", 0),
            "eta": request.eta and request.eta.isoformat(),
            "expires": request.expires and request.expires.isoformat(),
            "exchange": delivery.get("exchange"), "routing_key": delivery.get("routing_key"),  # the lane's queue
        })])

    def started(self, requests: Iterable[Any]) -> None:
        requests = list(requests)
        for request in requests:
            worker_state.total_count[request.name] += 1  # what celery's task_accepted counts
            worker_state.all_total_count[0] += 1
        dispatcher = self._dispatcher()
        if dispatcher is None:
            return
        self._publish(dispatcher, [("task-started", {"uuid": request.id}) for request in requests])

    def finished(self, requests: Iterable[Any], result: Any, runtime: float) -> None:
        requests = list(requests)
        if not (isinstance(result, list) and len(result) == len(requests)):  # the batch call raised
            result = [Outcome(True, f"batch_error: the batch returned {result!r:.200}")] * len(requests)
        for request, outcome in zip(requests, result, strict=True):
            worker_state.task_ready(request, successful=not outcome.failed)  # first: never left reserved
        dispatcher = self._dispatcher()
        if dispatcher is None:
            return
        self._publish(dispatcher, [
            ("task-failed", {"uuid": request.id, "exception": outcome.text, "traceback": None, "runtime": runtime})
            if outcome.failed else
            ("task-succeeded", {"uuid": request.id, "result": outcome.text, "runtime": runtime})
            for request, outcome in zip(requests, result, strict=True)
        ])

    @staticmethod
    def _publish(dispatcher: Any, events: list[tuple[str, dict[str, Any]]]) -> None:
        """A message's or a batch's events, built now (their clock and order) and handed to `PUBLISHER`,
        never to `send`, whose buffer the consumer's thread flushes."""
        built = [Event(kind, hostname=dispatcher.hostname, utcoffset=utcoffset(), pid=dispatcher.pid,
                       clock=dispatcher.clock.forward(), **fields) for kind, fields in events]
        PUBLISHER.put(dispatcher, built)


class EventPublisher:
    """Publishes built events on a thread of its own, in the order they were put; at exit it waits
    (up to `DRAIN_S`) for what is still queued."""

    DRAIN_S = 2.0

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._unpublished = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def put(self, dispatcher: Any, events: list[Event]) -> None:
        with self._lock:
            self._unpublished += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True, name="vlmq-task-events")
                self._thread.start()
                atexit.register(self.drain)
        self._queue.put((dispatcher, events))

    def _run(self) -> None:
        while True:
            taken = [self._queue.get()]
            while True:  # whatever else is queued goes in the same message
                try:
                    taken.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            runs: list[tuple[Any, list[Event]]] = []  # consecutive events of one dispatcher, in order
            for dispatcher, events in taken:
                if runs and runs[-1][0] is dispatcher:
                    runs[-1][1].extend(events)
                else:
                    runs.append((dispatcher, list(events)))
            for dispatcher, events in runs:
                try:
                    with dispatcher.mutex:
                        dispatcher._publish(events, dispatcher.producer, "task.multi")
                except Exception as exc:  # noqa: BLE001 - monitoring only: a lost event changes no job
                    log.warning("%d task events not published: %s", len(events), exc)
            with self._lock:
                self._unpublished -= len(taken)

    def drain(self, timeout: float = DRAIN_S) -> bool:
        """Wait until everything put so far is published; whether it was, in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._unpublished:
                    return True
            time.sleep(0.005)
        return False


PUBLISHER = EventPublisher()


class Revocations:
    """Job ids revoked through Celery (Flower), cancelled in the store once each, by the first worker."""

    REASON = "revoked from Flower"

    def __init__(self, cancel: Callable[[str, str], None]) -> None:
        self.cancel = cancel  # (job id, reason): the store's cancel, with its webhooks and lane
        self.seen: set[str] = set()

    def apply(self) -> None:
        try:
            revoked = set(worker_state.revoked)  # filled by the pidbox (another thread) as revokes arrive
        except RuntimeError:  # changed while copied: next beat
            return
        for job_id in revoked - self.seen:
            self.cancel(job_id, self.REASON)
            self.seen.add(job_id)


# --- Flower's side -----------------------------------------------------------------------------


class WorkerRefresh:
    """Keeps Flower's inspect data (`/api/workers`) in step with the workers its events show.

    Every `REFRESH_S` it compares: an alive worker (heartbeats) that the inspect data lacks, or
    whose heartbeat's `processed` differs from its `stats.total`, triggers one inspect of all
    workers (Flower's own `update_workers`: stats, active_queues, registered, conf). Nothing is
    asked while the data is current, so an idle fleet costs nothing.
    """

    def __init__(self, flower: Any, interval_s: float = REFRESH_S) -> None:
        self.flower = flower
        self.interval_s = interval_s

    def start(self) -> None:
        from tornado.ioloop import PeriodicCallback

        PeriodicCallback(self.tick, self.interval_s * 1000).start()

    def stale(self) -> list[str]:
        cached = self.flower.inspector.workers
        names = []
        for name, worker in list(self.flower.events.state.workers.items()):
            if not worker.alive:
                continue
            info = cached.get(name) or {}  # a defaultdict: .get does not add the name
            stats = info.get("stats") or {}
            counted = sum(stats.get("total", {}).values())
            if not stats or "active_queues" not in info or worker.processed not in (None, counted):
                names.append(name)
        return names

    def tick(self) -> None:
        try:
            stale = self.stale()
            if stale:
                flower_log.debug("inspecting workers again for %s", stale)
                self.flower.update_workers()  # one inspect in flight at a time (Flower's Inspector)
        except Exception as exc:  # noqa: BLE001 - never stop the timer
            flower_log.warning("worker refresh failed: %s", exc)


def run_flower(app: Celery, argv: list[str]) -> None:
    """`celery flower` for `app`, with `WorkerRefresh` running in Flower's event loop."""
    import flower.command

    base = flower.command.Flower

    class VlmqFlower(base):  # type: ignore[misc, valid-type]
        def start(self) -> None:
            WorkerRefresh(self).start()
            super().start()

    flower.command.Flower = VlmqFlower  # the class the `flower` command instantiates
    app.start(argv=argv)
