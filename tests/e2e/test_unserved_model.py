"""A model with no worker: its jobs wait (not lost), /v1/models says so, a late worker runs them."""

from __future__ import annotations

from tests.conftest import UNSERVED_MODEL
from tests.utils.images import cat, data_uri
from tests.utils.jobs import submit, wait
from tests.utils.processes import start_worker, wait_ready


def test_jobs_wait_for_a_worker_then_run(stack, base_env, log_dir) -> None:
    with stack.client() as api:
        model = {m["name"]: m for m in api.get("/v1/models").json()["models"]}[UNSERVED_MODEL]
        assert model["workers_online"] == 0 and not model["ready"]
        depth = model["queue_depth"]  # other tests may have left canceled jobs in this queue
        accepted = submit(api, {"type": "caption", "model": UNSERVED_MODEL, "image_url": data_uri(cat())})
        assert accepted.status_code == 202
        job_id = accepted.json()["id"]
        model = api.get(f"/v1/models/{UNSERVED_MODEL}").json()
        assert model["queue_depth"] == depth + 1 and model["workers_online"] == 0
        assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"

        worker = start_worker(UNSERVED_MODEL, base_env, log_dir)
        try:
            wait_ready(stack.redis_url, [worker], [UNSERVED_MODEL])
            job = wait(api, job_id, timeout=60)
            assert job["status"] == "succeeded", job
            model = api.get(f"/v1/models/{UNSERVED_MODEL}").json()
            assert model["ready"] and model["queue_depth"] == 0
        finally:
            worker.stop()
