"""Crashes and restarts lose no job: real processes killed and stopped by their PIDs."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import redis

from tests.conftest import CRASH_MODEL, QUANTIZED_MODEL, UNSERVED_MODEL
from tests.utils.images import cat, data_uri
from tests.utils.jobs import submit, wait
from tests.utils.processes import Proc, start_api, start_worker, stop_all, wait_ready
from vlmq.cli.redis_server import start_embedded

CAT = data_uri(cat())
SHORT_VISIBILITY = {"VLMQ_VISIBILITY_TIMEOUT_S": "6"}


def _running_on(api: httpx.Client, job_id: str, timeout: float = 30, attempt: int = 1) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(f"/v1/jobs/{job_id}").json()
        if job["status"] == "running" and job["attempts"] >= attempt:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never started")


def _worker_of(redis_url: str, job_id: str) -> str:
    return redis.Redis.from_url(redis_url).hget(f"vlmq:job:{job_id}", "worker").decode()


def _pid(worker_name: str) -> int:
    return int(worker_name.rsplit("-", 1)[1])


def test_killed_worker_job_is_redelivered_and_finishes_once(stack, base_env, log_dir) -> None:
    env = {**base_env, **SHORT_VISIBILITY}
    workers = [start_worker(CRASH_MODEL, env, log_dir) for _ in range(2)]
    try:
        wait_ready(stack.redis_url, workers, [CRASH_MODEL, CRASH_MODEL])
        with stack.client() as api:
            job = submit(api, {"type": "caption", "model": CRASH_MODEL, "image_url": CAT, "max_new_tokens": 60,
                               "cache": False}).json()
            _running_on(api, job["id"])
            first = _worker_of(stack.redis_url, job["id"])
            victim = next(w for w in workers if w.pid == _pid(first))
            victim.kill9()
            final = wait(api, job["id"], timeout=60)
            assert final["status"] == "succeeded", final
            assert final["attempts"] == 2
            assert _worker_of(stack.redis_url, job["id"]) != first
            events = [e for e in redis.Redis.from_url(stack.redis_url).xrange(f"vlmq:events:{job['id']}")
                      if e[1][b"event"] in (b"succeeded", b"failed")]
            assert len(events) == 1  # one final result, not two
    finally:
        stop_all(workers)


def test_a_job_that_kills_its_worker_every_time_fails_after_bounded_attempts(stack, base_env, log_dir) -> None:
    env = {**base_env, **SHORT_VISIBILITY, "VLMQ_MAX_ATTEMPTS": "2"}
    worker = start_worker(CRASH_MODEL, env, log_dir)
    spare: list[Proc] = [worker]
    try:
        wait_ready(stack.redis_url, [worker], [CRASH_MODEL])
        with stack.client() as api:
            job = submit(api, {"type": "caption", "model": CRASH_MODEL, "image_url": CAT, "max_new_tokens": 200,
                               "cache": False}).json()
            for attempt in (1, 2):  # the "poison" job takes its worker down each time it runs
                running = _running_on(api, job["id"], timeout=60, attempt=attempt)
                assert running["attempts"] == attempt
                spare[-1].kill9()
                spare.append(start_worker(CRASH_MODEL, env, log_dir))
                wait_ready(stack.redis_url, [spare[-1]], [CRASH_MODEL])
            final = wait(api, job["id"], timeout=60)
            assert final["status"] == "failed" and final["error"]["code"] == "attempts_exhausted"
            # the worker survives and serves the next job
            ok = wait(api, submit(api, {"type": "caption", "model": CRASH_MODEL, "image_url": CAT,
                                        "max_new_tokens": 3, "cache": False}).json()["id"], timeout=60)
            assert ok["status"] == "succeeded"
    finally:
        stop_all(spare)


def test_sigterm_finishes_the_job_in_hand_then_exits(stack, base_env, log_dir) -> None:
    worker = start_worker(CRASH_MODEL, base_env, log_dir)
    try:
        wait_ready(stack.redis_url, [worker], [CRASH_MODEL])
        with stack.client() as api:
            job = submit(api, {"type": "caption", "model": CRASH_MODEL, "image_url": CAT, "max_new_tokens": 80,
                               "cache": False}).json()
            _running_on(api, job["id"])
            code = worker.stop(timeout=60)  # SIGTERM
            assert code == 0
            final = api.get(f"/v1/jobs/{job['id']}").json()
            assert final["status"] == "succeeded" and final["attempts"] == 1
    finally:
        worker.stop()


def test_quantization_without_cuda_is_a_clear_start_up_error(stack, base_env, log_dir) -> None:
    worker = start_worker(QUANTIZED_MODEL, base_env, log_dir)
    assert worker.process.wait(120) == 3
    with stack.client() as api:
        model = api.get(f"/v1/models/{QUANTIZED_MODEL}").json()
    assert not model["ready"] and "CUDA" in model["setup_error"] and "8bit" in model["setup_error"]


@pytest.fixture
def own_redis(tmp_path, base_env):
    """A Redis of this test's own (append-only persistence), to stop and start."""
    server = start_embedded(tmp_path / "redis-data")
    yield server
    server.stop()


def test_redis_stops_and_comes_back(own_redis, base_env, log_dir, tmp_path) -> None:
    env = {**base_env, "VLMQ_REDIS_URL": own_redis.url}
    api_proc, url = start_api(env, log_dir)
    worker = start_worker("blip-base", env, log_dir)
    spare = None
    port = int(own_redis.url.rsplit(":", 1)[1].split("/")[0])
    try:
        wait_ready(own_redis.url, [worker], ["blip-base"])
        with httpx.Client(base_url=url, timeout=30) as api:
            waiting = [submit(api, {"type": "caption", "model": UNSERVED_MODEL, "image_url": CAT}).json()["id"]
                       for _ in range(3)]
            own_redis.stop()  # SIGTERM: Redis writes its append-only file and exits
            for response in (submit(api, {"type": "caption", "model": "blip-base", "image_url": CAT}),
                             api.get(f"/v1/jobs/{waiting[0]}"), api.get("/readyz")):
                assert response.status_code == 503, response.text
                assert response.headers["Retry-After"] and response.headers["content-type"] == "application/json"
            assert api.get("/healthz").status_code == 200

            restarted = start_embedded(tmp_path / "redis-data", port=port)
            own_redis.process = restarted.process
            deadline = time.monotonic() + 30
            while api.get("/readyz").status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            after = submit(api, {"type": "caption", "model": "blip-base", "image_url": CAT, "cache": False})
            assert after.status_code == 202, after.text  # the API recovered without a restart
            assert wait(api, after.json()["id"], timeout=60)["status"] == "succeeded"  # the worker reconnected
            spare = start_worker(UNSERVED_MODEL, env, log_dir)
            for job_id in waiting:  # accepted before the outage: not lost
                assert wait(api, job_id, timeout=90)["status"] == "succeeded"
    finally:
        for proc in (api_proc, worker, spare):
            if proc is not None:
                proc.stop()


def test_api_restart_mid_traffic_loses_no_accepted_job(stack, base_env, log_dir) -> None:
    proc, url = start_api(base_env, log_dir)
    port = int(url.rsplit(":", 1)[1])
    accepted: list[str] = []
    refused = 0
    stop = threading.Event()

    def traffic() -> None:
        nonlocal refused
        with httpx.Client(base_url=url, timeout=10) as client:
            while not stop.is_set():
                try:
                    response = submit(client, {"type": "caption", "model": "blip-base", "image_url": CAT,
                                               "max_new_tokens": 3, "cache": False})
                    if response.status_code == 202:
                        accepted.append(response.json()["id"])
                    else:
                        refused += 1
                except httpx.HTTPError:
                    refused += 1
                    time.sleep(0.05)

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        time.sleep(2)
        proc.kill9()
        proc, _ = start_api(base_env, log_dir, port=port)
        time.sleep(2)
    finally:
        stop.set()
        thread.join()
        proc.stop()
    assert len(accepted) > 10 and refused > 0
    with stack.client() as api:
        finals = [wait(api, job_id, timeout=120)["status"] for job_id in accepted]
    assert finals.count("succeeded") == len(accepted)
