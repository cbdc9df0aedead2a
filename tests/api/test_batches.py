"""Batches: hundreds of jobs in one request, bad items reported alone, counts and pages."""

from __future__ import annotations

import time

import httpx

from tests.utils.images import astronaut, cat, coffee, data_uri


def test_a_batch_of_500_with_some_bad_items(stack) -> None:
    images = [data_uri(img.resize((48, 48))) for img in (cat(), coffee(), astronaut())]
    jobs, bad = [], {}
    for i in range(500):
        job = {"type": "caption", "model": "blip-base", "image_url": images[i % 3], "max_new_tokens": 4,
               "cache": False}
        if i % 50 == 7:
            job, bad[i] = {**job, "model": "nope"}, "unknown_model"
        elif i % 50 == 19:
            job, bad[i] = {**job, "image_url": "data:image/png;base64,AAAA"}, "invalid_image"
        elif i % 50 == 33:
            job, bad[i] = {**job, "max_new_tokens": 0}, "invalid_request"
        jobs.append(job)
    with stack.client() as api:
        response = api.post("/v1/batches", json={"jobs": jobs}, timeout=120)
        assert response.status_code == 202, response.text
        batch = response.json()
        assert batch["accepted"] == 500 - len(bad) and batch["rejected"] == len(bad)
        assert {e["index"]: e["error"]["code"] for e in batch["errors"]} == bad
        assert [j["index"] for j in batch["jobs"]] == [i for i in range(500) if i not in bad]
        deadline = time.monotonic() + 120
        while True:
            response = api.get(f"/v1/batches/{batch['id']}", params={"limit": 100, "offset": 100})
            assert response.status_code == 200, response.text
            view = response.json()
            if view["counts"]["succeeded"] == batch["accepted"] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert view["counts"]["succeeded"] == batch["accepted"], view["counts"]
        assert view["total"] == batch["accepted"] and len(view["jobs"]) == 100
        assert [j["id"] for j in view["jobs"]] == [j["id"] for j in batch["jobs"][100:200]]
        assert all(j["output"]["text"] is not None for j in view["jobs"])


def test_batch_shape_errors(app_client) -> None:
    api = app_client
    for body, status in (({"jobs": []}, 422), ({"jobs": "x"}, 422), ({}, 422), ({"jobs": [{}]}, 202),
                         ({"jobs": [{}, 1]}, 422), ({"jobs": [{}] * 1001}, 422), ({"jobs": [], "extra": 1}, 422)):
        response = api.post("/v1/batches", json=body)
        assert response.status_code == status, (body, response.text)
    # an item that is not an object is the batch's shape (the schema's), not an item's error
    assert api.post("/v1/batches", json={"jobs": [{}, 1]}).json()["error"]["field"] == "jobs.1"
    assert api.post("/v1/batches", content=b"{oops", headers={"content-type": "application/json"}).status_code == 400
    assert api.get("/v1/batches/nope").status_code == 404


def test_another_callers_batch_is_404(stack) -> None:
    import redis

    from vlmq.keys import KeyStore

    key, _ = KeyStore(redis.Redis.from_url(stack.redis_url)).create("batcher")
    with stack.client() as api:
        batch = api.post("/v1/batches", json={"jobs": [{"type": "caption", "model": "blip-base",
                                                        "image_url": data_uri(cat())}]}).json()
        assert httpx.get(f"{stack.url}/v1/batches/{batch['id']}",
                         headers={"Authorization": f"Bearer {key}"}).status_code == 404
