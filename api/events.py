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
from vlmq.store import EVENTS, Event

FINAL_EVENTS = frozenset(s.value for s in JobStatus if s.final)
BLOCK_MS = 10_000


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
                after = entry_id.decode()
                event = Event(after, fields[b"event"].decode(), json.loads(fields[b"data"]))
                yield event
                if event.event in FINAL_EVENTS:
                    return
