"""Submitting jobs over real HTTP and waiting for them, for tests."""

from __future__ import annotations

import json
import time

import httpx

FINAL = {"succeeded", "failed", "canceled", "aborted"}


def submit(client: httpx.Client, body: dict, image: bytes | None = None, **kw) -> httpx.Response:
    if image is None:
        return client.post("/v1/jobs", json=body, **kw)
    return client.post("/v1/jobs", data={"request": json.dumps(body)}, files={"image": ("img", image)}, **kw)


def wait(client: httpx.Client, job_id: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job = response.json()
        if job["status"] in FINAL:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not final after {timeout}s: {job}")


def run(client: httpx.Client, body: dict, image: bytes | None = None, timeout: float = 90) -> dict:
    response = submit(client, body, image)
    assert response.status_code in (200, 202), response.text  # 200: already final (a cache answer)
    return wait(client, response.json()["id"], timeout)
