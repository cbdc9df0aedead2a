"""The job contract: Prefer: wait, Idempotency-Key, cancel, deadlines, backpressure, keys.

The API runs in this process (`app_client`, tests/api/conftest.py); the stack's workers run the jobs."""

from __future__ import annotations

import time

import httpx
import pytest
import redis

from tests.conftest import FULL_MODEL, FULL_QUEUE_LIMIT, UNSERVED_MODEL
from tests.utils.images import astronaut, cat, coffee, data_uri, encode
from tests.utils.jobs import submit, wait
from tests.utils.slow_model import SLOW_MODEL
from vlmq.keys import KeyStore

CAT = data_uri(cat())


@pytest.fixture(scope="module")
def api(app_client, stack) -> httpx.Client:
    return app_client  # the stack: its workers run what this API queues


def _key(stack, name: str, rate: float = 100, burst: int = 100) -> str:
    key, _ = KeyStore(redis.Redis.from_url(stack.redis_url)).create(name, rate=rate, burst=burst)
    return key


# --- Prefer: wait ----------------------------------------------------------------------------


def test_prefer_wait_answers_with_the_finished_job(api: httpx.Client) -> None:
    response = api.post("/v1/jobs", json={"type": "caption", "model": "blip-base", "image_url": CAT, "cache": False},
                        headers={"Prefer": "wait=30"})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded" and response.json()["output"]["text"] is not None
    assert response.headers["Preference-Applied"] == "wait=30"


def test_prefer_wait_gives_up_after_n_seconds(api: httpx.Client) -> None:
    began = time.monotonic()
    response = api.post("/v1/jobs", json={"type": "caption", "model": UNSERVED_MODEL, "image_url": CAT},
                        headers={"Prefer": "wait=1"})
    assert response.status_code == 202 and response.json()["status"] == "queued"
    assert 0.9 < time.monotonic() - began < 5
    api.post(f"/v1/jobs/{response.json()['id']}/cancel")
    assert api.post("/v1/jobs", json={"type": "caption", "model": "blip-base", "image_url": CAT},
                    headers={"Prefer": "wait=61"}).status_code == 422


# --- idempotency -----------------------------------------------------------------------------


def test_idempotent_replay_and_conflict(api: httpx.Client) -> None:
    body = {"type": "caption", "model": "blip-base", "image_url": data_uri(coffee()), "cache": False}
    key = {"Idempotency-Key": f"order-{time.time_ns()}"}
    first = api.post("/v1/jobs", json=body, headers=key)
    again = api.post("/v1/jobs", json=body, headers=key)
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
    upload = api.post("/v1/jobs", headers=key, data={"request": '{"type":"caption","model":"blip-base"}'},
                      files={"image": ("a.png", encode(astronaut()))})
    assert upload.status_code == 409 and upload.json()["error"]["code"] == "idempotency_conflict"
    changed = api.post("/v1/jobs", json={**body, "max_new_tokens": 5}, headers=key)
    assert changed.status_code == 409
    other_key = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": key["Idempotency-Key"] + "-2"})
    assert other_key.status_code == 202 and other_key.json()["id"] != first.json()["id"]


def test_a_refused_request_does_not_burn_its_idempotency_key(api: httpx.Client) -> None:
    key = {"Idempotency-Key": f"retry-{time.time_ns()}"}
    body = {"type": "caption", "model": "blip-base", "image_url": "http://127.0.0.1/x.png"}
    assert api.post("/v1/jobs", json=body, headers=key).status_code == 422
    fixed = api.post("/v1/jobs", json={**body, "image_url": CAT}, headers=key)
    assert fixed.status_code in (200, 202) and "Idempotent-Replayed" not in fixed.headers  # 200: a cache answer


# --- cancel and deadlines ----------------------------------------------------------------------


def test_cancel_a_queued_job_it_never_runs(api: httpx.Client, stack, base_env, log_dir) -> None:
    from tests.utils.processes import start_worker, wait_ready

    job = submit(api, {"type": "caption", "model": UNSERVED_MODEL, "image_url": CAT}).json()
    canceled = api.post(f"/v1/jobs/{job['id']}/cancel").json()
    assert canceled["status"] == "canceled" and canceled["cancel_reason"]
    worker = start_worker(UNSERVED_MODEL, base_env, log_dir)
    try:
        wait_ready(stack.redis_url, [worker], [UNSERVED_MODEL])
        deadline = time.monotonic() + 10
        while api.get(f"/v1/models/{UNSERVED_MODEL}").json()["queue_depth"] and time.monotonic() < deadline:
            time.sleep(0.1)
        after = api.get(f"/v1/jobs/{job['id']}").json()
        assert after["status"] == "canceled" and after["attempts"] == 0 and after["started_at"] is None
    finally:
        worker.stop()


def test_cancel_a_running_generation_stops_it(api: httpx.Client) -> None:
    job = submit(api, {"type": "caption", "model": SLOW_MODEL, "image_url": CAT, "max_new_tokens": 256,
                       "cache": False}).json()
    while api.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued":
        time.sleep(0.05)
    time.sleep(0.5)
    began = time.monotonic()
    assert api.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "canceled"
    # the worker stops at its next token and takes the next job at once
    after = submit(api, {"type": "caption", "model": SLOW_MODEL, "image_url": CAT, "max_new_tokens": 2,
                         "cache": False}).json()
    assert wait(api, after["id"], timeout=30)["status"] == "succeeded"
    assert time.monotonic() - began < 3  # the full 256 tokens would take ~7 s
    final = api.get(f"/v1/jobs/{job['id']}").json()
    assert final["status"] == "canceled" and final["output"] is None
    assert api.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "canceled"  # idempotent


def test_deadline_before_start_aborts(api: httpx.Client) -> None:
    job = submit(api, {"type": "caption", "model": UNSERVED_MODEL, "image_url": CAT},
                 headers={"Cancel-After": "500ms"}).json()
    assert job["status"] == "queued"
    time.sleep(0.8)
    after = api.get(f"/v1/jobs/{job['id']}").json()
    assert after["status"] == "aborted" and "deadline" in after["cancel_reason"]


def test_deadline_while_running_cancels(api: httpx.Client) -> None:
    job = submit(api, {"type": "caption", "model": SLOW_MODEL, "image_url": CAT, "max_new_tokens": 256,
                       "cache": False, "cancel_after": 1.5}).json()
    final = wait(api, job["id"], timeout=30)
    assert final["status"] == "canceled" and "deadline" in final["cancel_reason"]
    assert final["started_at"] is not None and final["run_ms"] < 4000


@pytest.mark.parametrize("value", ["soon", "-1s", "0", "9999h"])
def test_bad_cancel_after_is_422(api: httpx.Client, value: str) -> None:
    response = submit(api, {"type": "caption", "model": "blip-base", "image_url": CAT},
                      headers={"Cancel-After": value})
    assert response.status_code == 422 and response.json()["error"]["field"] == "Cancel-After"


# --- backpressure ------------------------------------------------------------------------------


def test_a_full_queue_answers_429_with_retry_after(api: httpx.Client) -> None:
    accepted = [submit(api, {"type": "caption", "model": FULL_MODEL, "image_url": CAT}) for _ in range(FULL_QUEUE_LIMIT)]
    assert [r.status_code for r in accepted] == [202] * FULL_QUEUE_LIMIT
    refused = submit(api, {"type": "caption", "model": FULL_MODEL, "image_url": CAT})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert refused.json()["error"]["code"] == "queue_full"
    for response in accepted:
        api.post(f"/v1/jobs/{response.json()['id']}/cancel")


# --- API keys ----------------------------------------------------------------------------------


def test_keys_see_and_cancel_only_their_own_jobs(stack) -> None:
    alice, bob = _key(stack, "alice"), _key(stack, "bob")
    with stack.client() as a, stack.client() as b, stack.client() as anonymous:
        a.headers["Authorization"] = f"Bearer {alice}"
        b.headers["Authorization"] = f"Bearer {bob}"
        job = submit(a, {"type": "caption", "model": "blip-base", "image_url": CAT}).json()
        for client in (b, anonymous):
            for method, path in (("GET", ""), ("POST", "/cancel"), ("GET", "/events"), ("GET", "/deliveries")):
                response = client.request(method, f"/v1/jobs/{job['id']}{path}")
                assert response.status_code == 404, (method, path, response.text)
        assert wait(a, job["id"])["status"] == "succeeded"
        assert job["id"] in [j["id"] for j in a.get("/v1/jobs").json()["jobs"]]
        assert job["id"] not in [j["id"] for j in b.get("/v1/jobs").json()["jobs"]]


def test_bad_keys_are_401(stack) -> None:
    with stack.client() as client:
        for header in ("Bearer nope", "Basic abc", "Bearer"):
            response = client.get("/v1/jobs", headers={"Authorization": header})
            assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"


def test_rate_limit_per_key(stack) -> None:
    key = _key(stack, "limited", rate=0.5, burst=2)
    with stack.client() as client:
        client.headers["Authorization"] = f"Bearer {key}"
        job = {"type": "caption", "model": "blip-base", "image_url": CAT, "cache": False}
        codes = [submit(client, job).status_code for _ in range(3)]
        assert codes[:2] == [202, 202] and codes[2] == 429
        response = submit(client, job)
        assert response.status_code == 429 and 1 <= int(response.headers["Retry-After"]) <= 2
        time.sleep(float(response.headers["Retry-After"]) + 0.1)
        assert submit(client, job).status_code == 202


def test_required_mode_refuses_anonymous(base_env, log_dir) -> None:
    from tests.utils.processes import start_api

    proc, url = start_api({**base_env, "VLMQ_AUTH_MODE": "required"}, log_dir)
    try:
        response = httpx.get(url + "/v1/jobs")
        assert response.status_code == 401 and response.json()["error"]["code"] == "missing_api_key"
        assert httpx.get(url + "/healthz").status_code == 200
    finally:
        proc.stop()
