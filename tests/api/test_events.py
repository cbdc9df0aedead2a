"""Live events over SSE: status changes and streamed text, resumable with Last-Event-ID."""

from __future__ import annotations

from tests.utils.images import cat, data_uri
from tests.utils.jobs import submit, wait
from tests.utils.slow_model import SLOW_MODEL
from vlmq.client import Client


def test_stream_with_a_reconnect_misses_nothing(stack) -> None:
    with stack.client() as api, Client(stack.url) as client:
        job = submit(api, {"type": "caption", "model": SLOW_MODEL, "image_url": data_uri(cat()),
                           "max_new_tokens": 40, "cache": False}).json()
        first = []
        for event in client.stream(job["id"]):
            first.append(event)
            if sum(e.event == "text" for e in first) == 3:
                break  # the connection is dropped mid-generation
        rest = list(client.stream(job["id"], last_event_id=first[-1].id))
        events = first + rest
        ids = [e.id for e in events]
        assert len(ids) == len(set(ids))  # no duplicate across the reconnect
        replay = list(client.stream(job["id"]))  # a finished job's stream replays from the start
        assert [e.id for e in replay] == ids  # ... and equals what the two connections saw: no gap
        assert events[0].event == "queued" and events[-1].event == "succeeded"
        text = "".join(e.data["text"] for e in events if e.event == "text")
        final = wait(api, job["id"])
        assert text.strip() == final["output"]["text"] and len(text.split()) >= 20


def test_unknown_job_stream_is_404(stack) -> None:
    with stack.client() as api:
        response = api.get("/v1/jobs/nope/events")
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
