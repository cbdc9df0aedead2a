"""/metrics moves when jobs run; queue depth and workers come from the real Redis."""

from __future__ import annotations

import re

from tests.conftest import UNSERVED_MODEL
from tests.utils.images import cat, data_uri
from tests.utils.jobs import run, submit


def _value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_move_when_jobs_run(stack) -> None:
    with stack.client() as api:
        before = api.get("/metrics").text
        for _ in range(3):
            job = run(api, {"type": "caption", "model": "blip-base", "image_url": data_uri(cat()), "cache": False})
            assert job["status"] == "succeeded"
        after = api.get("/metrics").text
    labels = {"type": "caption", "model": "blip-base"}
    assert _value(after, "vlmq_jobs_submitted_total", **labels) - _value(before, "vlmq_jobs_submitted_total", **labels) == 3
    done = {**labels, "status": "succeeded"}
    assert _value(after, "vlmq_jobs_finished_total", **done) - _value(before, "vlmq_jobs_finished_total", **done) == 3
    for histogram in ("vlmq_job_run_seconds_count", "vlmq_job_queue_seconds_count"):
        assert _value(after, histogram, **labels) - _value(before, histogram, **labels) == 3
    assert _value(after, "vlmq_batch_size_count", model="blip-base") > _value(before, "vlmq_batch_size_count",
                                                                             model="blip-base")
    assert _value(after, "vlmq_model_load_seconds", model="blip-base") > 0
    assert _value(after, "vlmq_workers_ready", model="blip-base") >= 1
    assert re.search(r'^http_requests_total\{.*handler="/v1/jobs".*\} \d', after, re.MULTILINE)


def test_queue_depth_is_read_from_redis(stack) -> None:
    with stack.client() as api:
        job = submit(api, {"type": "caption", "model": UNSERVED_MODEL, "image_url": data_uri(cat())}).json()
        try:
            text = api.get("/metrics").text
            assert _value(text, "vlmq_queue_depth", model=UNSERVED_MODEL) >= 1
            assert _value(text, "vlmq_workers_online", model=UNSERVED_MODEL) == 0
        finally:
            api.post(f"/v1/jobs/{job['id']}/cancel")


def test_api_and_worker_logs_are_json_lines_with_the_job_id(stack) -> None:
    import json
    import time

    with stack.client() as api:
        job = run(api, {"type": "caption", "model": "blip-base", "image_url": data_uri(cat()), "cache": False})
    time.sleep(0.5)

    def lines(proc) -> list[dict]:
        # a progress bar (model loading) may precede a JSON line on the same terminal line
        out = []
        for line in proc.log.read_text().splitlines():
            start = line.find('{"ts"')
            if start >= 0:
                out.append(json.loads(line[start:]))
        return out

    worker = [line for line in lines(stack.workers["blip-base"]) if line.get("job_id") == job["id"]]
    assert worker and worker[-1]["component"] == "worker" and worker[-1]["model"] == "blip-base"
    assert any("succeeded" in line["msg"] for line in worker)
    api_lines = [line for line in lines(stack.api) if line.get("job_id") == job["id"]]
    assert api_lines and api_lines[0]["component"] == "api" and "accepted" in api_lines[0]["msg"]
