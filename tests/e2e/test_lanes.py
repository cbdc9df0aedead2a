"""Interactive before bulk, fair share between keys in the bulk lane, limits per lane (real workers)."""

from __future__ import annotations

import time

import pytest
import redis

from tests.conftest import LANES_MODEL, LANES_SMALL_MODEL
from tests.utils.images import cat, data_uri
from tests.utils.jobs import submit, wait
from tests.utils.processes import start_worker, stop_all, wait_ready
from tests.utils.slow_model import SLOW_MODEL
from vlmq.keys import KeyStore

IMAGE = data_uri(cat().resize((32, 32)))
SLOW_BATCH = 4  # the slow model's max_batch_size (tests/conftest.py)


def _job(**extra) -> dict:
    return {"type": "caption", "model": LANES_MODEL, "image_url": IMAGE, "max_new_tokens": 3, "cache": False,
            **extra}


def _started(api, ids: list[str]) -> dict[str, float]:
    out = {}
    for job_id in ids:
        job = wait(api, job_id, timeout=120)
        assert job["status"] == "succeeded", job
        out[job_id] = job["started_at"]
    return out


@pytest.fixture
def drained_worker(stack, base_env, log_dir):
    """A worker for the lanes model, started by the test once its queue is set up."""
    procs = []

    def start():
        proc = start_worker(LANES_MODEL, base_env, log_dir)
        procs.append(proc)
        wait_ready(stack.redis_url, [proc], [LANES_MODEL])
        return proc

    yield start
    stop_all(procs)


def test_an_interactive_job_overtakes_a_bulk_backlog(stack, drained_worker) -> None:
    with stack.client() as api:
        bulk = api.post("/v1/batches", json={"jobs": [_job() for _ in range(40)]}).json()
        bulk_ids = [j["id"] for j in bulk["jobs"]]
        interactive = submit(api, _job()).json()
        assert interactive["lane"] == "interactive" and interactive["position"] == 0
        queued_bulk = api.get(f"/v1/jobs/{bulk_ids[-1]}").json()
        assert queued_bulk["lane"] == "bulk" and queued_bulk["position"] >= 39
        drained_worker()
        started = _started(api, [interactive["id"], *bulk_ids])
    order = sorted(started, key=started.get)
    assert order.index(interactive["id"]) == 0, order.index(interactive["id"])


def test_two_keys_bulk_jobs_interleave(stack, drained_worker) -> None:
    store = KeyStore(redis.Redis.from_url(stack.redis_url))
    heavy, _ = store.create("heavy", rate=100, burst=100)
    light, _ = store.create("light", rate=100, burst=100)
    with stack.client() as a, stack.client() as b:
        a.headers["Authorization"] = f"Bearer {heavy}"
        b.headers["Authorization"] = f"Bearer {light}"
        a_ids = [j["id"] for j in a.post("/v1/batches", json={"jobs": [_job() for _ in range(100)]}).json()["jobs"]]
        b_ids = [j["id"] for j in b.post("/v1/batches", json={"jobs": [_job() for _ in range(10)]}).json()["jobs"]]
        drained_worker()
        started = {**_started(a, a_ids), **_started(b, b_ids)}
    order = sorted(started, key=started.get)
    b_last = max(order.index(j) for j in b_ids)
    a_done_before_b_last = sum(1 for j in a_ids if order.index(j) < b_last)
    assert a_done_before_b_last <= 20, a_done_before_b_last  # B is not last: it ran alongside A's first jobs
    assert a_done_before_b_last >= 1  # ... and A made progress meanwhile


def test_a_full_bulk_lane_still_accepts_interactive_jobs(stack) -> None:
    job = {"type": "caption", "model": LANES_SMALL_MODEL, "image_url": IMAGE}
    with stack.client() as api:
        batch = api.post("/v1/batches", json={"jobs": [job] * 4}).json()
        assert batch["accepted"] == 3 and batch["errors"][0]["error"]["code"] == "queue_full"
        refused = submit(api, {**job, "priority": "bulk"})
        assert refused.status_code == 429 and refused.headers["Retry-After"]
        accepted = submit(api, job)
        assert accepted.status_code == 202 and accepted.json()["lane"] == "interactive"


def test_position_and_wait_estimate(stack) -> None:
    """A busy worker: the next batch's jobs wait for the current batch, the one after for one more."""
    long = {"type": "caption", "model": SLOW_MODEL, "image_url": IMAGE, "max_new_tokens": 40, "cache": False}
    with stack.client() as api:
        wait(api, submit(api, long).json()["id"])  # the model's batch time is known
        busy = [submit(api, long).json()["id"] for _ in range(SLOW_BATCH)]
        deadline = time.monotonic() + 30
        while any(api.get(f"/v1/jobs/{i}").json()["status"] == "queued" for i in busy):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        ids = [submit(api, long).json()["id"] for _ in range(2 * SLOW_BATCH)]
        try:
            views = [api.get(f"/v1/jobs/{i}").json() for i in ids]
            assert [v["position"] for v in views] == list(range(2 * SLOW_BATCH))
            etas = [v["eta_s"] for v in views]
            assert all(eta is not None for eta in etas), etas
            # the next batch starts when the current one ends (read a few ms apart: the clock moved)
            assert max(etas[:SLOW_BATCH]) - min(etas[:SLOW_BATCH]) < 0.1, etas
            assert etas[SLOW_BATCH] > etas[SLOW_BATCH - 1] + 0.2, etas  # the batch after: one batch time later
        finally:
            for job_id in busy + ids:
                api.post(f"/v1/jobs/{job_id}/cancel")
