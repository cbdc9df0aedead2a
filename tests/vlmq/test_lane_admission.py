"""Lane admission against a real Redis: limits, fair-share steps, positions in admission order."""

from __future__ import annotations

import pytest
import redis

from vlmq.jobs import Lane
from vlmq.lanes import PENDING, LaneFull, Lanes, fair_share_step


def _lanes(redis_url: str) -> Lanes:
    client = redis.Redis.from_url(redis_url)
    client.delete(PENDING.format("m-lanes", "bulk"), PENDING.format("m-lanes", "interactive"))
    return Lanes(client, ttl_s=600)


def test_jobs_admitted_in_the_same_instant_keep_their_order(redis_url: str, monkeypatch) -> None:
    lanes = _lanes(redis_url)
    monkeypatch.setattr("vlmq.lanes.time.time", lambda: 1_800_000_000.0)  # one clock reading for all
    ids = [f"job-{99 - i}" for i in range(40)]  # ids that sort in the reverse of admission order
    for job_id in ids:
        lanes.admit(job_id, "m-lanes", Lane.bulk, "owner", limit=100)
    ranks = [lanes.redis.zrank(PENDING.format("m-lanes", "bulk"), job_id) for job_id in ids]
    assert ranks == list(range(40))


def test_a_full_lane_refuses_and_the_other_lane_does_not(redis_url: str) -> None:
    lanes = _lanes(redis_url)
    for i in range(3):
        lanes.admit(f"b{i}", "m-lanes", Lane.bulk, "owner", limit=3)
    with pytest.raises(LaneFull):
        lanes.admit("b3", "m-lanes", Lane.bulk, "owner", limit=3)
    assert lanes.admit("i0", "m-lanes", Lane.interactive, "owner", limit=3) == 0
    lanes.release("b0", "m-lanes", Lane.bulk, "owner")
    assert lanes.depth("m-lanes", Lane.bulk) == 2


def test_fair_share_steps() -> None:
    assert [fair_share_step(k) for k in (0, 7, 8, 15, 16, 31, 32, 10_000, 10**9)] == [0, 0, 1, 1, 2, 2, 3, 9, 9]
