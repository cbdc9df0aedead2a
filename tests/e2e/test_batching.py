"""Micro-batching with real workers: batches fill, one bad item fails alone, results stay 1:1."""

from __future__ import annotations

import json
import time

import redis

from tests.conftest import LANES_MODEL
from tests.utils.images import astronaut, cat, coffee, data_uri
from tests.utils.jobs import submit, wait
from tests.utils.processes import start_worker, wait_ready
from vlmq.blobs import blob_store, image_name
from vlmq.jobs import JobRecord, JobStatus, now
from vlmq.jobtypes import JobType
from vlmq.store import JobStore


def _batch_sizes(client: redis.Redis, model: str) -> dict[str, float]:
    raw = client.hgetall("vlmq:metrics:batch_size")
    return {k.decode(): float(v) for k, v in raw.items() if f"model={model}" in k.decode()}


def test_queued_jobs_share_forward_passes_and_a_bad_item_fails_alone(stack, base_env, log_dir, settings) -> None:
    client = redis.Redis.from_url(stack.redis_url)
    before = _batch_sizes(client, LANES_MODEL)
    images = [data_uri(img.resize((64, 48))) for img in (astronaut(), cat(), coffee())]
    with stack.client() as api:
        ids = [submit(api, {"type": "caption", "model": LANES_MODEL, "image_url": images[i % 3],
                            "max_new_tokens": 5, "cache": False}).json()["id"] for i in range(11)]
        # a job whose stored image is corrupt (as if a bad image had got through), in the same queue
        template = api.get(f"/v1/jobs/{ids[0]}").json()
        store = JobStore(client, 3600)
        bad_id = f"bad{time.time_ns()}"
        blob_store(settings).put(image_name(bad_id), b"\x89PNG\r\n\x1a\n not really")
        bad = JobRecord(id=bad_id, type=JobType.caption, status=JobStatus.queued, params=template["input"],
                        model=LANES_MODEL, image=image_name(bad_id), created_at=now())
        store.create(bad)
        from vlmq.queues import queue_name, task_name
        from vlmq.settings import Settings
        from vlmq.tasks.app import make_celery

        make_celery(Settings(redis_url=stack.redis_url)).send_task(
            task_name(JobType.caption, LANES_MODEL), args=[bad.id], queue=queue_name(LANES_MODEL))
        ids.append(bad.id)
        worker = start_worker(LANES_MODEL, base_env, log_dir)
        try:
            wait_ready(stack.redis_url, [worker], [LANES_MODEL])
            finals = {job_id: wait(api, job_id) for job_id in ids}
        finally:
            worker.stop()
    assert finals[bad.id]["status"] == "failed" and finals[bad.id]["error"]["code"] == "invalid_image"
    assert all(finals[i]["status"] == "succeeded" for i in ids[:-1])
    after = _batch_sizes(client, LANES_MODEL)
    batches = after.get(f"model={LANES_MODEL}|count", 0) - before.get(f"model={LANES_MODEL}|count", 0)
    jobs_in_batches = after.get(f"model={LANES_MODEL}|sum", 0) - before.get(f"model={LANES_MODEL}|sum", 0)
    assert jobs_in_batches == 11  # the bad job never reached the model
    assert batches <= 5, batches  # 11 jobs, max_batch_size 4: about 3 forward passes, not 11
    assert json.dumps(finals[ids[0]]["output"])  # every job got its own output


def test_one_job_the_model_refuses_fails_alone_in_its_batch(stack, base_env, log_dir) -> None:
    with stack.client() as api:
        worker_model = "faces"
        prompts = ["detect face", "detect dog", "detect face ; eye", "detect face"]
        ids = [submit(api, {"type": "detect", "model": worker_model, "image_url": data_uri(astronaut()),
                            "prompt": p, "cache": False}).json()["id"] for p in prompts]
        finals = [wait(api, i) for i in ids]
    assert [f["status"] for f in finals] == ["succeeded", "failed", "succeeded", "succeeded"]
    assert "face" in finals[1]["error"]["message"]
