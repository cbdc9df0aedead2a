"""Following a job's event stream from the API (async): for SSE and for `Prefer: wait`.

The stream is the job's Redis stream (`vlmq:events:{id}`, see vlmq/store.py), after the events its
record implies (`queued`, id `0-1`): entries keep their ids, so a client that reconnects with
`Last-Event-ID` resumes after the last event it saw and misses nothing; a finished job's stream
replays from the start and ends with its final event.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from vlmq.jobs import JobRecord, JobStatus
from vlmq.keyspace import EVENTS
from vlmq.store import EVENTS_MAXLEN, FINAL_EVENT_ID, Event, implied_events

FINAL_EVENTS = frozenset(s.value for s in JobStatus if s.final)
BLOCK_MS = 10_000


def _event(entry_id: bytes, fields: dict[bytes, bytes]) -> Event:
    return Event(entry_id.decode(), fields[b"event"].decode(), json.loads(fields[b"data"]))


def _implied(record: JobRecord, after: str) -> list[Event]:
    return [e for e in implied_events(record) if _later(e.id, after)]


def _later(event_id: str, after: str) -> bool:
    ms, _, seq = event_id.partition("-")
    after_ms, _, after_seq = after.partition("-")
    return (int(ms), int(seq or 0)) > (int(after_ms), int(after_seq or 0))


async def replay(client: aioredis.Redis, record: JobRecord, after: str = "0") -> list[Event]:
    """A finished job's events after `after`, at once: those its record implies, then its stream; a
    stream gone (expired before the record) is the final status alone, id `FINAL_EVENT_ID`."""
    stream = await _stream(client, record.id, after)
    if stream is None:
        final = Event(FINAL_EVENT_ID, record.status.value, {"status": record.status.value})
        return [final] if _later(FINAL_EVENT_ID, after) else []
    return _implied(record, after) + stream


async def _stream(client: aioredis.Redis, job_id: str, after: str) -> list[Event] | None:
    key = EVENTS.format(job_id)
    pipe = client.pipeline(transaction=False)
    pipe.exists(key)
    pipe.xread({key: after}, count=EVENTS_MAXLEN)
    exists, reply = await pipe.execute()
    if not exists:
        return None
    return [_event(entry_id, fields) for _stream, entries in reply or [] for entry_id, fields in entries]


async def follow(client: aioredis.Redis, record: JobRecord, after: str = "0", until: float | None = None
                 ) -> AsyncIterator[Event | None]:
    """Events after `after`, as they come (those the record implies first); `None` every
    `BLOCK_MS` of silence (a keep-alive tick). Ends after a final event, or at the monotonic
    deadline `until`."""
    for event in _implied(record, after):
        yield event
        after = event.id
    key = EVENTS.format(record.id)
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
