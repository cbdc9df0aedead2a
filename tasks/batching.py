"""Micro-batching on top of celery-batches: fill batches from a backlog, don't wait when idle.

celery-batches flushes on a repeating timer (`flush_interval`) or when `flush_every` messages are
buffered. With the solo pool a batch runs inside that timer's callback, and a worker with jobs
waiting in Redis could flush 1, 2 or 6 jobs instead of `max_batch_size`, while a lone job of an idle
worker waited anything up to the interval. `QueueAwareBatches` ticks every half millisecond and decides:

1. `max_batch_size` jobs buffered: run now;
2. more jobs of this model still queued in Redis (one EXISTS over its lane lists): keep reading
   them, up to `max_wait_ms` (the registry's value, a cap) after the batch's first job arrived;
3. nothing else queued: run once no job has arrived for the *idle wait*, 2% of the model's recent
   batch time (an average of this worker's own batches; at most the cap), or once the first job has
   waited the cap. A burst of uploads to a model whose batch takes seconds fills its batch instead of
   starting one of two jobs. An idle wait under `LOOP_RESOLUTION_S` (a model whose batch takes under
   50 ms) is no wait: the event loop's timers fire on epoll's millisecond, so such a wait would cost
   one or two milliseconds where it meant a fraction of one; a job that reaches an idle model is
   flushed as it arrives (after the check for jobs queued behind it), and a burst's later jobs fill
   the next batch, prepared while the first runs.

The worker runs two batches at once (a two-thread pool, tasks/runner.py): one in the model
(`predict`, holding the `ModelGate`), the next one being claimed and prepared (images decoded, the
processor run). So while the model is busy, a partial next batch is not flushed at once: it keeps
filling until it is full, or until the forward pass in progress is expected to end within the time
the next batch takes to prepare (both moving averages): it is then ready when the model frees. With
two batches in flight, nothing more is flushed. An idle model uses the rules above.

Measured by benchmarks/throughput.py (batch sizes in its output, benchmarks/README.md).

Flower: celery-batches sends no task events for the messages it buffers and runs; this class sends
Celery's received / started / succeeded or failed events for each of them, and counts them in the
worker's stats (tasks/flower.py). Acknowledgement is celery-batches' own: acks_late messages
are acknowledged when the batch call returns.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from time import monotonic, perf_counter

from celery import signals
from celery_batches import Batches, SimpleRequest, consume_queue
from celery_batches.trace import apply_batches_task

from vlmq.tasks.flower import JobEvents

logger = logging.getLogger("vlmq.worker")
TICK_S = 0.0005
WAIT_SHARE = 0.02
LOOP_RESOLUTION_S = 0.001
EMA = 0.3


class ModelGate:
    """One forward pass at a time, and what the flush rule needs to know of the batches in flight.

    The runner holds `predicting()` around each `predict` call; batches count themselves in and out
    (`started` / `ended`); both timings are moving averages of this worker's own batches.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_flight = 0
        # Batches take the model in the order they were flushed (by their first job's id), whichever
        # finishes preparing first: a bulk batch flushed after an interactive one never overtakes it.
        self._turns: deque[str] = deque()
        self._turn_changed = threading.Condition()
        self.predict_since: float | None = None  # monotonic start of the forward pass in progress
        self.predict_s: float | None = None
        self.prepare_s: float | None = None
        self.free_since: float | None = None  # perf_counter() when the last forward pass ended

    def started(self, key: str | None = None) -> None:
        self.in_flight += 1
        if key is not None:
            with self._turn_changed:
                self._turns.append(key)

    def ended(self, key: str | None = None) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        if key is not None:
            self._take_turn(key)

    def _take_turn(self, key: str) -> None:
        with self._turn_changed:
            with contextlib.suppress(ValueError):
                self._turns.remove(key)
            self._turn_changed.notify_all()

    def prepared(self, seconds: float) -> None:
        """A batch took `seconds` from its start to its forward pass (claim, images, processor)."""
        self.prepare_s = _ema(self.prepare_s, seconds)

    @contextmanager
    def predicting(self, key: str | None = None) -> Iterator[float | None]:
        """Hold the model (once the batches flushed before the one of `key` took it); yields the
        `perf_counter()` at which it became free (None: first batch)."""
        if key is not None:
            with self._turn_changed:
                self._turn_changed.wait_for(lambda: not self._turns or self._turns[0] == key or key not in self._turns)
        with self.lock:
            if key is not None:
                self._take_turn(key)
            self.predict_since = monotonic()
            try:
                yield self.free_since
            finally:
                self.predict_s = _ema(self.predict_s, monotonic() - self.predict_since)
                self.predict_since = None
                self.free_since = perf_counter()

    def next_batch_can_start(self, now: float) -> bool:
        """Whether a partial batch should be flushed now (see the module's docstring)."""
        if self.in_flight == 0:
            return True
        if self.in_flight >= 2 or self.predict_since is None:
            return False  # both threads busy, or the batch in flight is still preparing
        remaining = (self.predict_s or 0.0) - (now - self.predict_since)
        return remaining <= (self.prepare_s or 0.0)


def _ema(old: float | None, new: float) -> float:
    return new if old is None else EMA * new + (1 - EMA) * old


def keep_waiting(age: float, quiet: float, idle_wait: float, max_wait: float,
                 backlog: Callable[[], bool] | None, gate: ModelGate | None = None, now: float = 0.0) -> bool:
    """Whether a partial batch whose first job arrived `age` s ago, and last job `quiet` s ago, waits on."""
    if gate is not None and gate.in_flight:
        return not gate.next_batch_can_start(now)  # the model is busy: fill the batch until it frees
    if age >= max_wait:
        return False
    if quiet < idle_wait:
        return True  # jobs are still arriving
    return backlog is not None and backlog()  # more jobs are queued: read them first (up to the cap)


class QueueAwareBatches(Batches):
    abstract = True
    max_wait = 0.2  # the cap, from the registry's max_wait_ms
    idle_wait = 0.2  # adapted after each batch
    backlog: Callable[[], bool] | None = None  # more messages queued for this model?
    gate: ModelGate | None = None  # the worker's model: batches in flight, forward pass in progress
    _first_at = 0.0
    _batch_s: float | None = None

    _last_at = 0.0
    _events: JobEvents | None = None

    def Strategy(self, task, app, consumer):
        handler = super().Strategy(task, app, consumer)
        if self._events is None:
            self._events = JobEvents(self, consumer)
            # celery-batches' handler sends this signal for each message it buffers (not the event). Celery
            # keys a bound method receiver by its function alone: without a uid of its own, a worker's
            # second job type (a model serving caption and explain) would not be connected at all.
            signals.task_received.connect(self._on_received, weak=False, dispatch_uid=f"vlmq-received-{self.name}")
        self._events.consumer = consumer

        def on_message(message, body, ack, reject, callbacks, **kwargs):
            self._last_at = monotonic()
            if self._buffer.qsize() == 0 and self._pending.qsize() == 0:
                self._first_at = self._last_at  # the batch's first job: its wait starts now
            handled = handler(message, body, ack, reject, callbacks, **kwargs)
            if not self.idle_wait and not (self.gate is not None and self.gate.in_flight):
                # no wait to sit out: an idle model takes it once the loop is done with this message (rule 3)
                if consumer.hub is not None:
                    consumer.hub.call_soon(self._do_flush)
                else:
                    self._do_flush()
            return handled

        return on_message

    def _on_received(self, sender=None, request=None, **kwargs) -> None:
        if request is not None and self._events is not None and getattr(request, "task", None) is self:
            self._events.received(request)

    def _do_flush(self) -> None:
        waiting = self._buffer.qsize()
        at = monotonic()
        if 0 < waiting < self.flush_every:
            if keep_waiting(at - self._first_at, at - self._last_at, self.idle_wait, self.max_wait, self.backlog,
                            self.gate, at):
                return
        elif waiting and self.gate is not None and self.gate.in_flight >= 2:
            return  # a full batch too waits for a thread
        # celery-batches flushes everything buffered; more than a batch piles up while both threads are
        # busy (the worker prefetches a batch per thread): the rest stays for the next flush
        buffered = list(consume_queue(self._buffer))
        for request in buffered[:self.flush_every]:
            self._buffer.put(request)
        super()._do_flush()
        for request in buffered[self.flush_every:]:
            self._buffer.put(request)

    def flush(self, requests):
        """celery-batches' flush (same pool call, same acknowledgements), with each job's events."""
        requests = list(requests)
        events = self._events
        accepted = {"at": monotonic()}
        key = requests[0].args[0] if requests and requests[0].args else None
        if self.gate is not None:
            self.gate.started(key)

        def on_accepted(pid: int, time_accepted: float) -> None:
            accepted["at"] = time_accepted
            for req in requests:
                if not req.task.acks_late:
                    req.acknowledge()
            self._tell(events and events.started, requests)

        def on_return(result) -> None:
            if self.gate is not None:
                self.gate.ended(key)
            for req in requests:
                if req.task.acks_late:
                    req.acknowledge()
            self._tell(events and events.finished, requests, result, monotonic() - accepted["at"])

        return self._pool.apply_async(
            apply_batches_task,
            (self, ([SimpleRequest.from_request(r) for r in requests],), 0, None),
            accept_callback=on_accepted,
            callback=on_return,
        )

    @staticmethod
    def _tell(method, *args) -> None:
        if not method:
            return
        try:
            method(*args)
        except Exception:  # monitoring must never change what happens to the jobs
            logger.exception("task events for a batch failed")

    def batch_took(self, seconds: float) -> None:
        """Adapt the idle wait to this model's batch time."""
        self._batch_s = seconds if self._batch_s is None else EMA * seconds + (1 - EMA) * self._batch_s
        wait = min(self.max_wait, WAIT_SHARE * self._batch_s)
        self.idle_wait = wait if wait >= LOOP_RESOLUTION_S else 0.0
