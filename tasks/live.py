"""Between a worker's generation loop and Redis: streamed text, cancellations, the busy mark.

`generate()` calls the hooks at every token; a Redis round trip there would cost more than the
token (it did: the hooks once took as long as the model). So the hooks only touch memory, and one
thread (`LiveJobs`) talks to Redis every `INTERVAL_S`, in one pipeline for the whole worker:

- text: each running job's new text since the last tick, one `text` event per job
  (`GenerationHooks.on_text` appends to it);
- cancellations: the status of every running job; one no longer `running` (canceled by its client,
  revoked, ended by a newer attempt) is stopped at its next token (`GenerationHooks.is_cancelled`
  reads a set). A job past its deadline is stopped without asking Redis;
- the worker's busy mark: when its current forward pass began (`busy_since` in its heartbeat hash,
  what a queued job's wait estimate reads, vlmq/lanes.py).

A job's last text goes out with its result (`take`): the finish script writes it before the final
event, and `take` waits for a tick in flight, so text never follows its job's end.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from vlmq.keyspace import EVENTS, JOB, WORKER
from vlmq.store import EVENTS_MAXLEN, JobStore

log = logging.getLogger("vlmq.worker")
INTERVAL_S = 0.05


class LiveJobs(threading.Thread):
    def __init__(self, store: JobStore, worker: str, interval_s: float = INTERVAL_S) -> None:
        super().__init__(daemon=True, name="vlmq-live")
        self.store = store
        self.worker = worker
        self.interval_s = interval_s
        self.stopped = threading.Event()
        self._lock = threading.Lock()  # the fields below
        self._tick = threading.Lock()  # held while a tick talks to Redis
        self._running: dict[str, float | None] = {}  # job id -> deadline
        self._text: dict[str, str] = {}
        self._stopped: set[str] = set()
        self._busy: float | None = None
        self._busy_sent: float | None = -1.0

    # --- from the batch (any thread) ------------------------------------------------------------

    def watch(self, deadlines: dict[str, float | None]) -> None:
        """These jobs are running here (job id -> deadline or None)."""
        with self._lock:
            self._running.update(deadlines)

    def take(self, job_ids: list[str]) -> dict[str, str]:
        """Stop watching these jobs; their text not sent yet (to go out with their results)."""
        with self._tick, self._lock:
            for job_id in job_ids:
                self._running.pop(job_id, None)
                self._stopped.discard(job_id)
            return {job_id: text for job_id in job_ids if (text := self._text.pop(job_id, ""))}

    def text(self, job_id: str, piece: str) -> None:
        with self._lock:
            if job_id in self._running:
                self._text[job_id] = self._text.get(job_id, "") + piece

    def cancelled(self, job_id: str) -> bool:
        """The job is no longer running in the store, or its deadline passed: stop it."""
        if job_id in self._stopped:
            return True
        deadline = self._running.get(job_id)
        return deadline is not None and time.time() >= deadline

    def busy(self, since: float | None) -> None:
        """The worker's forward pass began at `since` (None: the model is idle)."""
        self._busy = since

    # --- the thread -------------------------------------------------------------------------------

    def run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            try:
                self.flush()
            except redis.RedisError as exc:  # the batch's own writes decide what Redis loss means
                log.warning("live updates not written: %s", exc)

    def flush(self) -> None:
        """One tick: text out, statuses in, the busy mark, in one round trip."""
        with self._tick:
            with self._lock:
                text, self._text = self._text, {}
                running = list(self._running)
                busy = self._busy
            if not text and not running and busy == self._busy_sent:
                return
            pipe = self.store.redis.pipeline(transaction=False)
            for job_id, piece in text.items():
                key = EVENTS.format(job_id)
                pipe.xadd(key, {"event": "text", "data": _text_data(piece)}, maxlen=EVENTS_MAXLEN)
                pipe.expire(key, self.store.ttl_s)
            for job_id in running:
                pipe.hget(JOB.format(job_id), "status")
            if busy != self._busy_sent:
                pipe.hset(WORKER.format(self.worker), "busy_since", repr(busy or 0))
            replies = pipe.execute()
            self._busy_sent = busy
            statuses = replies[2 * len(text) : 2 * len(text) + len(running)]
            with self._lock:
                self._stopped |= {job_id for job_id, status in zip(running, statuses, strict=True)
                                  if status != b"running" and job_id in self._running}


def _text_data(piece: str) -> str:
    import json

    return json.dumps({"text": piece})
