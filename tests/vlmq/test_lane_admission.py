"""Admission against a real Redis (vlmq/admission.py): limits, fair-share steps, positions in admission
order, the Celery message where kombu would put it, nothing written when a lane is full."""

from __future__ import annotations

import json

import pytest
import redis

from vlmq.admission import Admission
from vlmq.jobs import JobRecord, JobStatus, Lane, now
from vlmq.jobtypes import JobType
from vlmq.keyspace import BACKLOG, JOB, PENDING
from vlmq.lanes import LaneFull, fair_share_step
from vlmq.queues import queue_keys

MODEL = "m-lanes"


def _client(redis_url: str) -> redis.Redis:
    client = redis.Redis.from_url(redis_url)
    keys = [PENDING.format(MODEL, lane.value) for lane in Lane] + [BACKLOG.format(MODEL, "owner")]
    keys += [key for lane in Lane for key in queue_keys(MODEL, lane)]
    client.delete(*keys)
    return client


def _job(job_id: str, lane: Lane = Lane.bulk) -> JobRecord:
    return JobRecord(id=job_id, type=JobType.caption, status=JobStatus.queued, params={"type": "caption"},
                     model=MODEL, image=f"images/{job_id}", created_at=now(), owner="owner", lane=lane)


def test_jobs_admitted_in_the_same_instant_keep_their_order(redis_url: str, monkeypatch) -> None:
    client = _client(redis_url)
    admission = Admission(client, 600)
    monkeypatch.setattr("vlmq.admission.time.time", lambda: 1_800_000_000.0)  # one clock reading for all
    ids = [f"job-{99 - i}" for i in range(40)]  # ids that sort in the reverse of admission order
    positions = [admission.submit_blocking([_job(job_id)], {job_id: 100}).positions[job_id] for job_id in ids]
    ranks = [client.zrank(PENDING.format(MODEL, "bulk"), job_id) for job_id in ids]
    assert ranks == positions == list(range(40))


def test_fair_share_steps_and_the_message_kombu_would_hold(redis_url: str) -> None:
    client = _client(redis_url)
    admission = Admission(client, 600)
    for i in range(40):
        admission.submit_blocking([_job(f"f{i}")], {f"f{i}": 100})
    lists = {key: client.lrange(key, 0, -1) for key in queue_keys(MODEL, Lane.bulk)}
    seen = {}
    for key, messages in lists.items():
        step = int(key.rsplit("\x16", 1)[1]) if "\x16" in key else 0
        for raw in messages:
            message = json.loads(raw)
            assert message["properties"]["priority"] == step  # the list and the message agree
            assert message["headers"]["task"] == f"vlmq.caption.{MODEL}"
            seen[message["headers"]["id"]] = step
    assert [seen[f"f{i}"] for i in range(40)] == [fair_share_step(i) for i in range(40)]


def test_a_full_lane_refuses_and_writes_nothing(redis_url: str) -> None:
    client = _client(redis_url)
    admission = Admission(client, 600)
    for i in range(3):
        admission.submit_blocking([_job(f"full{i}")], {f"full{i}": 3})
    with pytest.raises(LaneFull):
        admission.submit_blocking([_job("full3")], {"full3": 3})
    assert not client.exists(JOB.format("full3"))
    assert client.zcard(PENDING.format(MODEL, "bulk")) == 3
    admitted = admission.submit_blocking([_job("i0", Lane.interactive)], {"i0": 3})
    assert admitted.positions == {"i0": 0}  # a full bulk lane leaves the interactive lane open


def test_fair_share_steps() -> None:
    assert [fair_share_step(k) for k in (0, 7, 8, 15, 16, 31, 32, 10_000, 10**9)] == [0, 0, 1, 1, 2, 2, 3, 9, 9]
