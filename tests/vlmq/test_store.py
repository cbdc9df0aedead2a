"""The job store against a real Redis: transitions, fencing, events, compare settlement."""

from __future__ import annotations

import redis

from vlmq.jobs import JobRecord, JobStatus, now
from vlmq.jobtypes import JobType
from vlmq.store import JobStore


def _store(redis_url: str) -> JobStore:
    return JobStore(redis.Redis.from_url(redis_url), ttl_s=600)


def _record(job_id: str, **extra) -> JobRecord:
    return JobRecord(id=job_id, type=JobType.caption, status=JobStatus.queued, params={"type": "caption"},
                     model="m", image="k", created_at=now(), **extra)


def test_start_finish_and_events(redis_url: str) -> None:
    store = _store(redis_url)
    store.create(_record("s1"))
    start = store.start("s1", "w1", max_attempts=3)
    assert (start.action, start.attempt) == ("run", 1)
    assert store.finish("s1", 1, JobStatus.succeeded, output={"text": "hi"})
    record = store.get("s1")
    assert record.status is JobStatus.succeeded and record.output == {"text": "hi"}
    assert record.queue_ms is not None and record.run_ms is not None
    assert [e.event for e in store.events("s1")] == ["queued", "running", "succeeded"]
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
    store.create(parent, _record("c1", parent="p1"), _record("c2", parent="p1"))
    store.start("c1", "w", 3)
    store.finish("c1", 1, JobStatus.succeeded, output={"text": "a"})
    assert store.settle_parent("p1", "a", store.get("c1")) == "running"
    store.start("c2", "w", 3)
    store.finish("c2", 1, JobStatus.failed, error={"code": "model_error", "message": "boom"})
    assert store.settle_parent("p1", "b", store.get("c2")) == "succeeded"
    # settling again (a redelivered child) changes nothing
    assert store.settle_parent("p1", "b", store.get("c2")) == "succeeded"
    results = store.get("p1").compare_output()["results"]
    assert results["a"]["output"] == {"text": "a"}
    assert results["b"]["error"]["message"] == "boom"


def test_compare_fails_only_when_every_model_failed(redis_url: str) -> None:
    store = _store(redis_url)
    parent = JobRecord(id="p2", type=JobType.compare, status=JobStatus.queued, params={}, created_at=now(),
                       children={"a": "d1", "b": "d2"})
    store.create(parent, _record("d1", parent="p2"), _record("d2", parent="p2"))
    for child, model in (("d1", "a"), ("d2", "b")):
        store.start(child, "w", 3)
        store.finish(child, 1, JobStatus.failed, error={"code": "model_error", "message": model})
        store.settle_parent("p2", model, store.get(child))
    record = store.get("p2")
    assert record.status is JobStatus.failed and record.error["code"] == "all_models_failed"


def test_images_stored_once_by_key(redis_url: str) -> None:
    store = _store(redis_url)
    store.put_image("img1", b"first")
    store.put_image("img1", b"second")
    assert store.get_image("img1") == b"first"
