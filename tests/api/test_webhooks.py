"""Webhooks: a real receiver verifies Standard Webhooks signatures; failures are retried with the
same webhook-id; every attempt shows in /deliveries; a slow receiver never holds a model worker."""

from __future__ import annotations

import threading
import time

import redis
from standardwebhooks.webhooks import Webhook

from tests.utils.http_server import serve
from tests.utils.images import cat, data_uri
from tests.utils.jobs import run, submit, wait
from vlmq.keys import KeyStore
from vlmq.settings import Settings
from vlmq.webhook_secrets import anonymous_secret


class Receiver:
    """Answers 500 `fail_first` times, then 200; records each verified delivery."""

    def __init__(self, secret: str, fail_first: int = 0, delay_s: float = 0.0) -> None:
        self.webhook = Webhook(secret)
        self.fail_first = fail_first
        self.delay_s = delay_s
        self.calls: list[dict] = []
        self.lock = threading.Lock()

    def __call__(self, handler) -> None:
        body = handler.rfile.read(int(handler.headers["Content-Length"]))
        headers = {k.lower(): v for k, v in handler.headers.items()}
        payload = self.webhook.verify(body, headers)  # raises on a bad signature
        time.sleep(self.delay_s)
        with self.lock:
            self.calls.append({"id": headers["webhook-id"], "payload": payload})
            status = 500 if len(self.calls) <= self.fail_first else 200
        handler.send_response(status)
        handler.send_header("Content-Length", "0")
        handler.end_headers()


def _wait_for(predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_failures_then_success_are_retried_with_the_same_id(stack, settings: Settings) -> None:
    secret = anonymous_secret(redis.Redis.from_url(stack.redis_url), settings)
    receiver = Receiver(secret, fail_first=2)
    with serve({"/hook": receiver}) as port, stack.client() as api:
        job = run(api, {"type": "caption", "model": "blip-base", "image_url": data_uri(cat()),
                        "webhook": f"http://localhost:{port}/hook", "webhook_events_filter": ["completed"]})
        assert job["status"] == "succeeded"
        _wait_for(lambda: len(receiver.calls) == 3)
        assert {c["id"] for c in receiver.calls} == {f"{job['id']}.completed"}
        payload = receiver.calls[-1]["payload"]
        assert payload["type"] == "job.completed" and payload["data"]["id"] == job["id"]
        assert payload["data"]["output"] == job["output"]
        deliveries = api.get(f"/v1/jobs/{job['id']}/deliveries").json()["deliveries"]
        assert [d["outcome"] for d in deliveries] == ["retry", "retry", "delivered"]
        assert [d["status_code"] for d in deliveries] == [500, 500, 200]


def test_start_output_completed_events_signed_with_the_keys_secret(stack, settings: Settings) -> None:
    key, record = KeyStore(redis.Redis.from_url(stack.redis_url)).create("hooks", rate=100, burst=100)
    receiver = Receiver(record.webhook_secret)
    with serve({"/hook": receiver}) as port, stack.client() as api:
        api.headers["Authorization"] = f"Bearer {key}"
        job = run(api, {"type": "caption", "model": "blip-base", "image_url": data_uri(cat()),
                        "webhook": f"http://localhost:{port}/hook", "cache": False,
                        "webhook_events_filter": ["start", "output", "completed"]})
        _wait_for(lambda: len(receiver.calls) == 3)
        assert sorted(c["id"] for c in receiver.calls) == sorted(
            f"{job['id']}.{e}" for e in ("start", "output", "completed"))
    # another secret does not verify these deliveries
    other = Receiver(anonymous_secret(redis.Redis.from_url(stack.redis_url), settings))
    with serve({"/hook": other}) as port, stack.client() as api:
        api.headers["Authorization"] = f"Bearer {key}"
        run(api, {"type": "caption", "model": "blip-base", "image_url": data_uri(cat()),
                  "webhook": f"http://localhost:{port}/hook"})
        time.sleep(1.5)
        assert other.calls == []  # verify() raised: the receiver never accepted a delivery


def test_a_slow_receiver_does_not_hold_the_model_worker(stack, settings: Settings) -> None:
    secret = anonymous_secret(redis.Redis.from_url(stack.redis_url), settings)
    receiver = Receiver(secret, delay_s=5)
    with serve({"/hook": receiver}) as port, stack.client() as api:
        hooked = submit(api, {"type": "caption", "model": "blip-base", "image_url": data_uri(cat()),
                              "webhook": f"http://localhost:{port}/hook"}).json()
        wait(api, hooked["id"])
        began = time.monotonic()
        plain = run(api, {"type": "caption", "model": "blip-base", "image_url": data_uri(cat()), "cache": False})
        assert plain["status"] == "succeeded" and time.monotonic() - began < 3


def test_webhook_urls_pass_the_address_checks(stack) -> None:
    with stack.client() as api:
        for url in ("http://127.0.0.1:9/hook", "http://169.254.169.254/x", "file:///etc/passwd", "ftp://x/y"):
            response = submit(api, {"type": "caption", "model": "blip-base", "image_url": data_uri(cat()),
                                    "webhook": url})
            assert response.status_code == 422, response.text
            assert response.json()["error"]["field"] == "webhook"
        response = submit(api, {"type": "caption", "model": "blip-base", "image_url": data_uri(cat()),
                                "webhook_events_filter": ["finished"]})
        assert response.status_code == 422


def test_retry_backoff_grows_with_jitter() -> None:
    from vlmq.tasks.webhooks import backoff_s

    delays = [[backoff_s(a, 1.0) for _ in range(200)] for a in (1, 2, 3, 4)]
    means = [sum(d) / len(d) for d in delays]
    assert means == sorted(means) and means[3] > 6 * means[0]
    assert len({round(x, 6) for x in delays[1]}) > 150  # jittered, not one fixed value
    assert max(backoff_s(30, 1.0) for _ in range(100)) <= 450
