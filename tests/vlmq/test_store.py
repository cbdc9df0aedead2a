"""The job store against a real Redis: transitions, fencing, events, compare settlement."""

from __future__ import annotations

import redis

from vlmq.fanout import parent_output
from vlmq.jobs import CacheOutcome, JobRecord, JobStatus, now
from vlmq.jobtypes import JobType
from vlmq.store import QUEUED_EVENT_ID, JobStore, Result, implied_events


def _store(redis_url: str) -> JobStore:
    return JobStore(redis.Redis.from_url(redis_url), ttl_s=600)


def _record(job_id: str, **extra) -> JobRecord:
    fields = {"model": "m", "image": "images/k", **extra}
    return JobRecord(id=job_id, type=JobType.caption, status=JobStatus.queued, params={"type": "caption"},
                     created_at=now(), **fields)


def test_start_finish_and_events(redis_url: str) -> None:
    store = _store(redis_url)
    store.create(_record("s1"))
    start = store.start("s1", "w1", max_attempts=3)
    assert (start.action, start.attempt) == ("run", 1)
    assert store.finish("s1", 1, JobStatus.succeeded, output={"text": "hi"})
    record = store.get("s1")
    assert record.status is JobStatus.succeeded and record.output == {"text": "hi"}
    assert record.queue_ms is not None and record.run_ms is not None
    # a queued job has no stream (Redis memory): its `queued` event is implied by its record
    assert [e.event for e in store.events("s1")] == ["running", "succeeded"]
    assert [(e.id, e.event) for e in implied_events(record)] == [(QUEUED_EVENT_ID, "queued")]
    hit = JobRecord(id="h1", type=JobType.caption, status=JobStatus.succeeded, params={}, created_at=now(),
                    output={"text": "hi"}, cache=CacheOutcome.hit)
    store.create(hit)  # born final: its first event is its end
    assert implied_events(hit) == [] and [e.event for e in store.events("h1")] == ["succeeded"]
    # a final job is never run again, and never rewritten
    assert store.start("s1", "w2", 3).action == "final"
    assert not store.finish("s1", 1, JobStatus.failed, error={"code": "x", "message": "y"})
    assert store.get("s1").status is JobStatus.succeeded


def test_a_stale_attempt_cannot_overwrite_a_newer_one(redis_url: str) -> None:
    store = _store(redis_url)
    store.create(_record("s2"))
    first = store.start("s2", "w1", 3)
    second = store.start("s2", "w2", 3)  # redelivered while the first was thought dead
    assert (first.attempt, second.attempt) == (1, 2)
    assert not store.finish("s2", first.attempt, JobStatus.succeeded, output={"text": "stale"})
    assert store.finish("s2", second.attempt, JobStatus.succeeded, output={"text": "fresh"})
    record = store.get("s2")
    assert record.output == {"text": "fresh"} and record.attempts == 2


def test_attempts_are_bounded(redis_url: str) -> None:
    store = _store(redis_url)
    store.create(_record("s3"))
    for _ in range(2):
        assert store.start("s3", "w", max_attempts=2).action == "run"
    assert store.start("s3", "w", max_attempts=2).action == "final"
    record = store.get("s3")
    assert record.status is JobStatus.failed and record.error["code"] == "attempts_exhausted"


def test_cancel_queued_and_running(redis_url: str) -> None:
    store = _store(redis_url)
    store.create(_record("s4"), _record("s5"))
    assert store.cancel("s4", "by client") == "canceled"
    assert store.start("s4", "w", 3).action == "final"  # a canceled job never runs
    store.start("s5", "w", 3)
    assert store.cancel("s5", "by client") == "canceled"
    assert not store.finish("s5", 1, JobStatus.succeeded, output={"text": "late"})
    assert store.get("s5").output is None
    assert store.cancel("nope", "x") is None


def test_compare_parent_settles_once_all_children_are_final(redis_url: str) -> None:
    store = _store(redis_url)
    parent = JobRecord(id="p1", type=JobType.compare, status=JobStatus.queued, params={}, created_at=now(),
                       children={"a": "c1", "b": "c2"})
    store.create(parent, _record("c1", parent="p1", model="a"), _record("c2", parent="p1", model="b"))
    store.claim(["c1", "c2"], "w", 3)
    assert store.get("p1").status is JobStatus.running  # a child started: so did its parent
    (first,) = store.finish_batch([Result("c1", 1, JobStatus.succeeded, output={"text": "a"})])
    assert (first.parent, first.parent_status) == ("p1", "running")
    (last,) = store.finish_batch([Result("c2", 1, JobStatus.failed, error={"code": "model_error", "message": "boom"})])
    assert last.parent_status == "succeeded"
    # a redelivered child's late result is fenced out: nothing settles twice
    (again,) = store.finish_batch([Result("c2", 1, JobStatus.succeeded, output={"text": "late"})])
    assert not again.written and store.get("p1").status is JobStatus.succeeded
    results = parent_output(store.get("p1"))["results"]
    assert results["a"]["output"] == {"text": "a"}
    assert results["b"]["error"]["message"] == "boom"


def test_compare_fails_only_when_every_model_failed(redis_url: str) -> None:
    store = _store(redis_url)
    parent = JobRecord(id="p2", type=JobType.compare, status=JobStatus.queued, params={}, created_at=now(),
                       children={"a": "d1", "b": "d2"})
    store.create(parent, _record("d1", parent="p2", model="a"), _record("d2", parent="p2", model="b"))
    store.claim(["d1", "d2"], "w", 3)
    store.finish_batch([Result(child, 1, JobStatus.failed, error={"code": "model_error", "message": model})
                        for child, model in (("d1", "a"), ("d2", "b"))])
    record = store.get("p2")
    assert record.status is JobStatus.failed and record.error["code"] == "all_models_failed"


def test_a_batch_claims_and_finishes_in_one_round_trip_each(redis_url: str) -> None:
    store = _store(redis_url)
    store.create(_record("b1"), _record("b2"), _record("b3", deadline=now() - 1))
    store.cancel("b2", "by client")
    claims = {c.job_id: c for c in store.claim(["b1", "b2", "b3", "nope"], "w", 3)}
    assert (claims["b1"].action, claims["b1"].attempt, claims["b1"].record.status) == ("run", 1, JobStatus.running)
    assert (claims["b2"].action, claims["b2"].status) == ("final", "canceled")
    assert (claims["b3"].action, claims["b3"].status) == ("ended", "aborted")
    assert claims["nope"].action == "missing"
    (done,) = store.finish_batch([Result("b1", 1, JobStatus.succeeded, output={"text": "ok"}, text="o")])
    assert done.written
    assert [(e.event, e.data) for e in store.events("b1")][-2:] == [("text", {"text": "o"}),
                                                                   ("succeeded", {"status": "succeeded",
                                                                                  "output": {"text": "ok"}})]
