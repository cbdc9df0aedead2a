"""frontend/follow.py: a job's events turned into UI snapshots, with a fake client (no HTTP)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx

from vlmq.client import ApiError, JobEvent
from vlmq.frontend.follow import LOST, follow_job


def view(status: str, **extra) -> dict:
    created = datetime.now(UTC).isoformat(timespec="milliseconds")
    return {"id": "job1", "type": "caption", "status": status, "created_at": created, "attempts": 1,
            "queue_ms": None, "run_ms": None, "cache": "miss", **extra}


class FakeClient:
    """`get` answers from a list (the last answer repeats); `stream` plays scripted connections."""

    def __init__(self, views: list, connections: list[list]) -> None:
        self.views = list(views)
        self.connections = list(connections)
        self.last_event_ids: list[str | None] = []
        self.gets = 0

    async def get(self, job_id: str) -> dict:
        self.gets += 1
        answer = self.views.pop(0) if len(self.views) > 1 else self.views[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def stream(self, job_id: str, last_event_id: str | None = None):
        self.last_event_ids.append(last_event_id)
        script = self.connections.pop(0) if self.connections else [("sleep", 60)]
        for item in script:
            if isinstance(item, Exception):
                raise item
            if item[0] == "sleep":
                await asyncio.sleep(item[1])
                continue
            event_id, name, data = item
            yield JobEvent(event_id, name, data)


def collect(client: FakeClient, **kwargs) -> list:
    async def run() -> list:
        return [p async for p in follow_job(client, "job1", retry_s=0.01, max_retry_s=0.02, **kwargs)]

    return asyncio.run(asyncio.wait_for(run(), 10))


def test_events_become_snapshots_until_the_final_job() -> None:
    final = view("succeeded", output={"text": "a cat"}, queue_ms=5.0, run_ms=40.0)
    client = FakeClient([view("queued"), final], [[
        ("1-0", "queued", {"status": "queued"}),
        ("2-0", "running", {"status": "running", "attempt": 1}),
        ("3-0", "text", {"text": "a"}),
        ("4-0", "text", {"text": " cat"}),
        ("5-0", "succeeded", {"status": "succeeded", "output": {"text": "a cat"}}),
    ]])
    snapshots = collect(client)
    assert [s.status for s in snapshots] == ["queued", "queued", "running", "running", "running", "succeeded"]
    assert [s.text for s in snapshots[2:5]] == ["", "a", "a cat"]
    last = snapshots[-1]
    assert last.final and last.job["run_ms"] == 40.0 and last.output == {"text": "a cat"}
    assert client.gets == 2  # once at the start, once for the final job


def test_an_already_final_job_is_one_snapshot() -> None:
    client = FakeClient([view("failed", error={"code": "model_error", "message": "boom"})], [])
    snapshots = collect(client)
    assert len(snapshots) == 1 and snapshots[0].status == "failed"
    assert snapshots[0].error == {"code": "model_error", "message": "boom"}
    assert client.last_event_ids == []  # no stream opened


def test_a_lost_connection_is_shown_then_resumed_after_the_last_event() -> None:
    client = FakeClient(
        [view("running"), view("running"), view("succeeded", output={"text": "ab"})],
        [
            [("1-0", "running", {"status": "running", "attempt": 1}), ("2-0", "text", {"text": "a"}),
             httpx.ReadError("connection reset")],
            [("3-0", "text", {"text": "b"}), ("4-0", "succeeded", {"status": "succeeded"})],
        ],
    )
    snapshots = collect(client)
    assert client.last_event_ids == [None, "2-0"]  # resumed after the last event seen: none lost, none twice
    assert any(s.note == LOST for s in snapshots)
    assert snapshots[-1].status == "succeeded" and snapshots[-1].text == "ab"
    before_final = [s for s in snapshots if not s.final]
    assert before_final[-1].text == "ab" and before_final[-1].note is None


def test_a_redelivered_job_starts_its_text_again() -> None:
    client = FakeClient([view("running"), view("succeeded", output={"text": "c"})], [[
        ("1-0", "running", {"status": "running", "attempt": 1}),
        ("2-0", "text", {"text": "a b"}),
        ("3-0", "running", {"status": "running", "attempt": 2}),
        ("4-0", "text", {"text": "c"}),
        ("5-0", "succeeded", {"status": "succeeded"}),
    ]])
    snapshots = collect(client)
    texts = [s.text for s in snapshots if s.status == "running"]
    assert texts[-1] == "c" and "a b" in texts
    assert snapshots[-2].attempt == 2


def test_silence_still_updates_the_elapsed_seconds() -> None:
    client = FakeClient([view("queued")], [[("sleep", 0.35), ("1-0", "canceled", {"status": "canceled"})]])
    client.views = [view("queued"), view("canceled", cancel_reason="canceled by the client")]
    snapshots = collect(client, tick_s=0.05)
    ticks = [s for s in snapshots if s.status == "queued"]
    assert len(ticks) >= 4
    assert ticks[-1].elapsed_s > ticks[0].elapsed_s
    assert snapshots[-1].status == "canceled"


def test_an_unknown_job_is_an_error_snapshot() -> None:
    client = FakeClient([ApiError(404, "not_found", "no job 'job1' (unknown, or expired)", "job_id")], [])
    snapshots = collect(client)
    assert len(snapshots) == 1 and snapshots[0].status == "error"
    assert snapshots[0].error == {"code": "not_found", "message": "no job 'job1' (unknown, or expired)"}


def test_the_job_expiring_while_followed_ends_with_an_error() -> None:
    client = FakeClient([view("queued")], [[ApiError(404, "not_found", "gone")]])
    snapshots = collect(client)
    assert snapshots[-1].status == "error" and snapshots[-1].error["code"] == "not_found"


def test_an_unreachable_api_at_the_start() -> None:
    client = FakeClient([httpx.ConnectError("refused")], [])
    snapshots = collect(client)
    assert snapshots[-1].status == "error" and snapshots[-1].error["code"] == "api_unreachable"


def test_compare_partials_fill_in() -> None:
    first = {**view("queued"), "type": "compare", "models": ["a", "b"],
             "output": {"results": {"a": {"status": "queued", "job_id": "c1"}, "b": {"status": "queued", "job_id": "c2"}}}}
    done = {**first, "status": "succeeded", "output": {"results": {
        "a": {"status": "succeeded", "job_id": "c1", "output": {"text": "x"}},
        "b": {"status": "failed", "job_id": "c2", "error": {"code": "model_error", "message": "boom"}}}}}
    client = FakeClient([first, done], [[
        ("1-0", "running", {"status": "running"}),
        ("2-0", "partial", {"model": "a", "outcome": {"status": "succeeded", "job_id": "c1", "output": {"text": "x"}}}),
        ("3-0", "partial", {"model": "b", "outcome": {"status": "failed", "job_id": "c2",
                                                      "error": {"code": "model_error", "message": "boom"}}}),
        ("4-0", "succeeded", {"status": "succeeded"}),
    ]])
    snapshots = collect(client)
    assert snapshots[0].partials["a"]["status"] == "queued"
    assert snapshots[2].partials["a"]["status"] == "succeeded" and snapshots[2].partials["b"]["status"] == "queued"
    assert snapshots[-1].partials["b"]["error"]["message"] == "boom"
