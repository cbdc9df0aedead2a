"""Flower sees every job: a real Flower process, read through its HTTP API, over the real test stack.

What Flower shows per job (README "Operations", tasks/flower.py): one Celery task per job,
task id = job id, name `vlmq.<type>.<model>`; received, started, then SUCCESS or FAILURE (FAILURE
exactly when the job ended `failed` in vlmq, with `<code>: <message>` as its exception); result =
the job's final status (`not run: already <status>` for a job that was final before its batch);
runtime = the batch call's wall time. `/api/workers` lists workers started after Flower, with their
processed counts, without `?refresh=1`; `/metrics` counts the events.
"""

from __future__ import annotations

import socket
import sys
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import LANES_MODEL
from tests.utils.images import astronaut, cat, coffee, data_uri
from tests.utils.jobs import submit, wait
from tests.utils.processes import spawn, start_worker, stop_all, wait_ready
from vlmq.cli.redis_server import free_port


def _worker_name(model: str, pid: int) -> str:
    return f"{model}@{socket.gethostname()}-{pid}"  # tasks/worker.py run_worker


def _poll(what: str, check, timeout: float = 25.0, every: float = 0.5):
    """`check()` until it returns something true; its last answer in the failure message."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        last = check()
        if last and last[0]:
            return last[1]
        time.sleep(every)
    pytest.fail(f"{what} not seen in {timeout}s: {last[1] if last else None}")


@pytest.fixture
def flower(stack, base_env, log_dir):
    port = free_port()
    proc = spawn("flower", [sys.executable, "-m", "vlmq.cli", "flower"],
                 {**base_env, "VLMQ_FLOWER_PORT": str(port), "VLMQ_FLOWER_HOST": "127.0.0.1"}, log_dir)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.alive(), f"flower exited:\n{proc.tail()}"
            try:
                if client.get("/healthcheck").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"flower did not start:\n{proc.tail()}"
            time.sleep(0.2)
        yield client
    finally:
        client.close()
        proc.stop()


@pytest.fixture
def stopped_after():
    """Processes a test starts, stopped after it (and after its checks of Flower)."""
    procs = []
    yield procs
    stop_all(procs)


def test_flower_sees_every_job_its_outcome_runtime_and_the_workers(stack, flower, stopped_after, base_env,
                                                                     log_dir) -> None:
    uri, small = data_uri(astronaut()), data_uri(cat().resize((64, 48)))
    expected: dict[str, tuple[str, str, str]] = {}  # job id -> (task name, Flower state, result or exception start)
    with stack.client() as api:
        # a worker that starts after Flower: its jobs were queued before it, one of them revoked from Flower
        # meanwhile (the workers alive then cancel it in the store: it never runs, wherever it goes)
        late_ids = [submit(api, {"type": "caption", "model": LANES_MODEL, "image_url": small, "max_new_tokens": 4,
                                 "cache": False}).json()["id"] for _ in range(3)]
        assert flower.post(f"/api/task/revoke/{late_ids[2]}").status_code == 200
        revoked = _poll("the revoked job canceled", lambda: (
            (job := api.get(f"/v1/jobs/{late_ids[2]}").json())["status"] == "canceled", job))
        assert revoked["cancel_reason"] == "revoked from Flower", revoked
        late = start_worker(LANES_MODEL, base_env, log_dir)
        stopped_after.append(late)
        singles = [
            ({"type": "caption", "model": "blip-base", "image_url": small, "max_new_tokens": 5}, "SUCCESS"),
            # the same worker's second job type: its own task, with its own events
            ({"type": "explain", "model": "blip-base", "image_url": small, "max_new_tokens": 3}, "SUCCESS"),
            ({"type": "vqa", "model": "vilt-vqa", "image_url": uri, "question": "how many people?"}, "SUCCESS"),
            ({"type": "detect", "model": "faces", "image_url": uri, "prompt": "detect face"}, "SUCCESS"),
            # accepted by the API, refused by the model (it knows faces and eyes only): failed in vlmq
            ({"type": "detect", "model": "faces", "image_url": uri, "prompt": "detect dog"}, "FAILURE"),
        ]
        for body, state in singles:
            response = submit(api, {**body, "cache": False})
            assert response.status_code == 202, response.text
            expected[response.json()["id"]] = (f"vlmq.{body['type']}.{body['model']}", state, "")
        compare = submit(api, {"type": "compare", "models": ["blip-base", "blip-large"], "image_url": small,
                               "task": {"type": "caption", "max_new_tokens": 4}, "cache": False}).json()
        jobs = [{"type": "caption", "model": "blip-base", "image_url": img, "max_new_tokens": 4, "cache": False}
                for img in (small, data_uri(coffee().resize((48, 48))))] * 3
        batch = api.post("/v1/batches", json={"jobs": jobs})
        assert batch.status_code == 202, batch.text
        for job in batch.json()["jobs"]:
            expected[job["id"]] = ("vlmq.caption.blip-base", "SUCCESS", "")

        finals = {job_id: wait(api, job_id) for job_id in expected}
        parent = wait(api, compare["id"])
        wait_ready(stack.redis_url, [late], [LANES_MODEL], timeout=60)
        late_finals = [wait(api, job_id) for job_id in late_ids]
    for job_id, job in finals.items():
        name, state, _ = expected[job_id]
        want = "failed" if state == "FAILURE" else "succeeded"
        assert job["status"] == want, job
        if state == "FAILURE":
            expected[job_id] = (name, state, f"{job['error']['code']}: {job['error']['message']}")
        else:
            expected[job_id] = (name, state, "succeeded")
    assert parent["status"] == "succeeded", parent
    for model, outcome in parent["output"]["results"].items():
        expected[outcome["job_id"]] = (f"vlmq.caption.{model}", "SUCCESS", "succeeded")
    assert [j["status"] for j in late_finals] == ["succeeded", "succeeded", "canceled"]
    expected[late_ids[0]] = expected[late_ids[1]] = (f"vlmq.caption.{LANES_MODEL}", "SUCCESS", "succeeded")
    expected[late_ids[2]] = (f"vlmq.caption.{LANES_MODEL}", "SUCCESS", "not run: already canceled")

    # every job is one Flower task: its id, name, final state, result or exception, runtime, worker
    def tasks_done():
        tasks = flower.get("/api/tasks").json()
        done = {i: tasks[i] for i in expected if i in tasks and tasks[i]["state"] in ("SUCCESS", "FAILURE")}
        if len(done) == len(expected):
            return True, done
        return False, {i: (expected[i][0], tasks.get(i, {}).get("state"), tasks.get(i, {}).get("worker"))
                       for i in set(expected) - set(done)}

    tasks = _poll("every job as a finished Flower task", tasks_done)
    assert compare["id"] not in tasks  # the compare parent is no Celery task: its children are
    late_name = _worker_name(LANES_MODEL, late.pid)
    for job_id, (name, state, text) in expected.items():
        task = tasks[job_id]
        assert (task["uuid"], task["name"], task["state"]) == (job_id, name, state), task
        assert (task["exception"] if state == "FAILURE" else task["result"]) == text, task
        assert isinstance(task["runtime"], float) and task["runtime"] > 0, task
        assert task["received"] and task["started"] and task["received"] <= task["started"], task
        model = name.split(".", 2)[2]
        pid = late.pid if model == LANES_MODEL else stack.workers[model].pid
        assert task["worker"] == _worker_name(model, pid), task
    failed = [tasks[i]["name"] for i in expected if tasks[i]["state"] == "FAILURE"]
    assert failed == ["vlmq.detect.faces"], failed  # Flower's failures are vlmq's: one job failed

    # /api/workers, no refresh: the pinned workers (the late one too) with their processed counts
    used = {"blip-base": 7 + 1, "blip-large": 1, "vilt-vqa": 1, "faces": 2}
    names = {_worker_name(m, stack.workers[m].pid): (m, n) for m, n in used.items()}
    names[late_name] = (LANES_MODEL, 3)  # the canceled job's message was handled too (not run)

    def workers_counted():
        workers = flower.get("/api/workers").json()
        counts = {name: sum(workers.get(name, {}).get("stats", {}).get("total", {}).values()) for name in names}
        queues = {name: [q["name"] for q in workers.get(name, {}).get("active_queues", [])] for name in names}
        ok = all(counts[n] >= want for n, (_, want) in names.items()) and all(queues.values())
        return ok, (counts, queues)

    counts, queues = _poll("the workers and their processed counts in /api/workers", workers_counted)
    assert counts[late_name] == 3, counts  # its own, fresh worker: exactly its three messages
    assert sorted(queues[late_name]) == [f"vlmq.{LANES_MODEL}.bulk", f"vlmq.{LANES_MODEL}.interactive"], queues

    # Flower's Prometheus metrics count the events per task name
    events: dict[tuple[str, str], float] = {}
    runtimes: dict[str, float] = {}
    for family in text_string_to_metric_families(flower.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "flower_events_total":
                key = (sample.labels["task"], sample.labels["type"])
                events[key] = events.get(key, 0) + sample.value
            elif sample.name == "flower_task_runtime_seconds_count":
                runtimes[sample.labels["task"]] = runtimes.get(sample.labels["task"], 0) + sample.value
    for name in {name for name, _, _ in expected.values()}:
        jobs = sum(1 for n, _, _ in expected.values() if n == name)
        for kind in ("task-received", "task-started"):
            assert events.get((name, kind), 0) >= jobs, (name, kind, events)
        ended = events.get((name, "task-succeeded"), 0) + events.get((name, "task-failed"), 0)
        assert ended >= jobs and runtimes.get(name, 0) >= jobs, (name, events, runtimes)
    assert events.get(("vlmq.detect.faces", "task-failed")) == 1, events
