"""Following a job's event stream from the API (async): for SSE and for `Prefer: wait`.

The stream is the job's Redis stream (`vlmq:events:{id}`, see vlmq/store.py): entries keep their
ids, so a client that reconnects with `Last-Event-ID` resumes after the last event it saw and
misses nothing; a finished job's stream replays from the start and ends with its final event.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from vlmq.jobs import JobStatus
from vlmq.store import EVENTS, EVENTS_MAXLEN, Event

FINAL_EVENTS = frozenset(s.value for s in JobStatus if s.final)
BLOCK_MS = 10_000
#: The id of a finished job's final status sent alone (its events expired): after it, nothing.
FINAL_EVENT_ID = "0-1"


def _event(entry_id: bytes, fields: dict[bytes, bytes]) -> Event:
    return Event(entry_id.decode(), fields[b"event"].decode(), json.loads(fields[b"data"]))


async def replay(client: aioredis.Redis, job_id: str, after: str = "0") -> list[Event] | None:
    """A finished job's events after `after`, at once (None: the job has no event stream any more)."""
    key = EVENTS.format(job_id)
    pipe = client.pipeline(transaction=False)
    pipe.exists(key)
    pipe.xread({key: after}, count=EVENTS_MAXLEN)
    exists, reply = await pipe.execute()
    if not exists:
        return None
    return [_event(entry_id, fields) for _stream, entries in reply or [] for entry_id, fields in entries]


async def follow(client: aioredis.Redis, job_id: str, after: str = "0", until: float | None = None
                 ) -> AsyncIterator[Event | None]:
    """Events after `after`, as they come; `None` every `BLOCK_MS` of silence (a keep-alive tick).

    Ends after a final event, or at the monotonic deadline `until`.
    """
    key = EVENTS.format(job_id)
    while until is None or time.monotonic() < until:
        block = BLOCK_MS if until is None else max(1, min(BLOCK_MS, int((until - time.monotonic()) * 1000)))
        reply = await client.xread({key: after}, count=200, block=block)
        if not reply:
            yield None
            continue
        for _stream, entries in reply:
            for entry_id, fields in entries:
                event = _event(entry_id, fields)
                after = event.id
                yield event
                if event.event in FINAL_EVENTS:
                    return
