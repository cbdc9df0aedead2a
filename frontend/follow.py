"""Following one job through the API until it is final, as a stream of `Progress` snapshots.

`follow_job` is what every tab's event handler iterates (after a submit, or on page load for the
job the browser remembered). It reads the job once (`GET /v1/jobs/{id}`), then its Server-Sent
Events (`client.stream`), and yields a snapshot

* on every event: `queued`, `running` (a new attempt restarts the streamed text), `text` pieces,
  compare `partial` outcomes, and the final status (then the final job is read once more, so
  queue/run times and the cache outcome are shown);
* every `tick_s` of silence, with the elapsed seconds updated, so a queued job visibly waits;
* when the connection to the API drops: a note, then reconnects with `Last-Event-ID` (no event
  lost, none repeated) until the API answers again. A restarted worker is invisible here: the
  API redelivers the job and its events go on.

Only `vlmq.client.AsyncClient` is used (any object with its `get` and `stream` methods will do:
the unit tests pass a fake one).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from vlmq.client import ApiError, AsyncClient, JobEvent
from vlmq.frontend.logic import FINAL, Progress, error_progress, progress_of_job

LOST = "lost the connection to the API; reconnecting"
_GONE = {401, 403, 404}  # retrying cannot help


async def _get(client: AsyncClient, job_id: str, timeout_s: float) -> dict[str, Any]:
    return await asyncio.wait_for(client.get(job_id), timeout_s)


async def _pump(client: AsyncClient, job_id: str, queue: asyncio.Queue, retry_s: float, max_retry_s: float,
                timeout_s: float) -> None:
    """Events of the job into `queue` as ("event", JobEvent); reconnects after a lost connection.

    After a failure it reads the job again before reconnecting, queueing ("view", job) so the UI
    learns at once that the API is back (and whether the job ended meanwhile).
    """
    last_id: str | None = None
    failures = 0
    while True:
        try:
            async for event in client.stream(job_id, last_event_id=last_id):
                failures = 0
                if event.id:
                    last_id = event.id
                await queue.put(("event", event))
                if event.final:
                    return
            failures = 0  # the server closed the stream early: reconnect at once
            continue
        except ApiError as exc:
            if exc.status in _GONE:
                await queue.put(("error", exc))
                return
            await queue.put(("note", f"the API answered {exc.status} {exc.code}; retrying"))
        except (httpx.HTTPError, OSError, ValueError):
            await queue.put(("note", LOST))
        while True:  # wait for the API to answer again
            await asyncio.sleep(min(retry_s * 2**failures, max_retry_s))
            failures += 1
            try:
                view = await _get(client, job_id, timeout_s)
            except ApiError as exc:
                if exc.status in _GONE:
                    await queue.put(("error", exc))
                    return
                continue
            except (TimeoutError, httpx.HTTPError, OSError, ValueError):
                continue
            await queue.put(("view", view))
            if view.get("status") in FINAL:
                return
            break


def _apply(progress: Progress, event: JobEvent) -> Progress:
    """The snapshot after one event (final events are handled by the caller)."""
    data = event.data or {}
    if event.event == "text":
        return progress.with_(status="running", text=progress.text + str(data.get("text", "")), note=None)
    if event.event == "partial":
        partials = dict(progress.partials)
        if data.get("model"):
            partials[data["model"]] = data.get("outcome") or {}
        return progress.with_(partials=partials, note=None)
    if event.event == "running":
        attempt = data.get("attempt")
        text = progress.text
        if attempt is not None and progress.attempt is not None and attempt != progress.attempt:
            text = ""  # a redelivered job starts its text again
        return progress.with_(status="running", attempt=attempt or progress.attempt, text=text, note=None)
    if event.event == "queued":
        return progress.with_(status="queued", note=None)
    return progress.with_(note=None)


async def follow_job(
    client: AsyncClient,
    job_id: str,
    *,
    tick_s: float = 1.0,
    refresh_s: float = 5.0,
    retry_s: float = 0.5,
    max_retry_s: float = 5.0,
    timeout_s: float = 10.0,
    clock: Callable[[], float] = time.time,
    first: dict[str, Any] | None = None,
) -> AsyncIterator[Progress]:
    """Snapshots of the job until (and including) its final one. `first`: the job as already read."""
    try:
        view = first if first is not None else await _get(client, job_id, timeout_s)
    except ApiError as exc:
        yield error_progress(exc.code, exc.message, job_id)
        return
    except (TimeoutError, httpx.HTTPError, OSError) as exc:
        yield error_progress("api_unreachable", f"cannot reach the API: {exc or type(exc).__name__}", job_id)
        return
    progress = progress_of_job(view, clock())
    started = time.monotonic() - (progress.elapsed_s or 0.0)
    yield progress
    if progress.final:
        return

    queue: asyncio.Queue = asyncio.Queue()
    pump = asyncio.create_task(_pump(client, job_id, queue, retry_s, max_retry_s, timeout_s))
    last_read = time.monotonic()
    try:
        while True:
            try:
                kind, payload = await asyncio.wait_for(queue.get(), tick_s)
            except TimeoutError:
                kind, payload = "tick", None
            if kind == "tick" and pump.done() and queue.empty():
                kind, payload = "note", LOST  # the pump died unexpectedly: read the job instead
            if kind == "tick" and time.monotonic() - last_read >= refresh_s:
                # A safety net and a refresh (queue position, ETA, once the API gives them).
                last_read = time.monotonic()
                with contextlib.suppress(ApiError, httpx.HTTPError, OSError, asyncio.TimeoutError, ValueError):
                    kind, payload = "view", await _get(client, job_id, timeout_s)
            elapsed = time.monotonic() - started
            if kind == "tick":
                progress = progress.with_(elapsed_s=elapsed)
            elif kind == "note":
                progress = progress.with_(note=payload, elapsed_s=elapsed)
                if pump.done():
                    pump = asyncio.create_task(_pump(client, job_id, queue, retry_s, max_retry_s, timeout_s))
            elif kind == "error":
                yield error_progress(payload.code, payload.message, job_id)
                return
            elif kind == "view":
                view = payload
                if view.get("status") in FINAL:
                    yield progress_of_job(view, clock())
                    return
                progress = progress.with_(job=view, elapsed_s=elapsed, note=None,
                                          status=view.get("status", progress.status))
            elif kind == "event":
                event: JobEvent = payload
                if event.final:
                    yield await _final(client, job_id, event, progress, timeout_s, clock)
                    return
                progress = _apply(progress, event).with_(elapsed_s=elapsed)
            yield progress
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pump


async def _final(client: AsyncClient, job_id: str, event: JobEvent, progress: Progress, timeout_s: float,
                 clock: Callable[[], float]) -> Progress:
    """The final snapshot: the job read once more (times, cache); the event alone if that fails."""
    for delay in (0.0, 0.3, 1.0):
        await asyncio.sleep(delay)
        try:
            view = await _get(client, job_id, timeout_s)
        except (TimeoutError, ApiError, httpx.HTTPError, OSError, ValueError):
            continue
        if view.get("status") in FINAL:
            final = progress_of_job(view, clock())
            if not final.text and progress.text and view.get("type") != "compare":
                final = final.with_(text=progress.text)
            return final
    data = event.data or {}
    job = dict(progress.job or {})
    job.update(status=event.event, output=data.get("output"), error=data.get("error"))
    return progress.with_(status=event.event, job=job, error=data.get("error"), note=None,
                          text=(data.get("output") or {}).get("text") or progress.text)
