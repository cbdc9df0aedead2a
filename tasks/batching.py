"""Micro-batching on top of celery-batches: fill batches from a backlog, don't wait when idle.

celery-batches flushes on a repeating timer (`flush_interval`) or when `flush_every` messages are
buffered. With the solo pool a batch runs inside that timer's callback, and a worker with jobs
waiting in Redis could flush 1, 2 or 6 jobs instead of `max_batch_size`, while a lone job of an idle
worker waited anything up to the interval. `QueueAwareBatches` ticks every millisecond and decides:

1. `max_batch_size` jobs buffered: run now;
2. more jobs of this model still queued in Redis (one EXISTS over its lane lists): keep reading
   them, up to `max_wait_ms` (the registry's value, a cap) after the batch's first job arrived;
3. nothing else queued: run once no job has arrived for the *idle wait*, 2% of the model's recent
   batch time (an average of this worker's own batches; at least 1 ms, at most the cap), or once
   the first job has waited the cap. A tiny model runs a lone job after ~1 ms; a burst of uploads
   to a model whose batch takes seconds fills its batch instead of starting one of two jobs.

Measured by benchmarks/throughput.py (batch sizes in its output, benchmarks/README.md).
"""

from __future__ import annotations

from collections.abc import Callable
from time import monotonic

from celery_batches import Batches

TICK_S = 0.001
WAIT_SHARE = 0.02
MIN_WAIT_S = 0.001
EMA = 0.3


def keep_waiting(age: float, quiet: float, idle_wait: float, max_wait: float,
                 backlog: Callable[[], bool] | None) -> bool:
    """Whether a partial batch whose first job arrived `age` s ago, and last job `quiet` s ago, waits on."""
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
    _first_at = 0.0
    _batch_s: float | None = None

    _last_at = 0.0

    def Strategy(self, task, app, consumer):
        handler = super().Strategy(task, app, consumer)

        def on_message(message, body, ack, reject, callbacks, **kwargs):
            self._last_at = monotonic()
            if self._buffer.qsize() == 0 and self._pending.qsize() == 0:
                self._first_at = self._last_at  # the batch's first job: its wait starts now
            return handler(message, body, ack, reject, callbacks, **kwargs)

        return on_message

    def _do_flush(self) -> None:
        waiting = self._buffer.qsize()
        if 0 < waiting < self.flush_every:
            at = monotonic()
            if keep_waiting(at - self._first_at, at - self._last_at, self.idle_wait, self.max_wait, self.backlog):
                return
        super()._do_flush()

    def batch_took(self, seconds: float) -> None:
        """Adapt the idle wait to this model's batch time."""
        self._batch_s = seconds if self._batch_s is None else EMA * seconds + (1 - EMA) * self._batch_s
        self.idle_wait = min(self.max_wait, max(MIN_WAIT_S, WAIT_SHARE * self._batch_s))
