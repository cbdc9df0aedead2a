"""/metrics moves when jobs run; queue depth and workers come from the real Redis."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

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
    for stage in ("images", "preprocess", "model_waited", "claim", "generate", "finish"):
        grew = (_value(after, "vlmq_batch_stage_seconds_count", model="blip-base", stage=stage)
                - _value(before, "vlmq_batch_stage_seconds_count", model="blip-base", stage=stage))
        assert grew >= 1, stage
    assert _value(after, "vlmq_batch_stage_seconds_sum", model="blip-base", stage="generate") > 0
    assert _value(after, "vlmq_model_load_seconds", model="blip-base") > 0
    assert _value(after, "vlmq_workers_ready", model="blip-base") >= 1
    assert re.search(r'^http_requests_total\{.*handler="/v1/jobs".*\} \d', after, re.MULTILINE)


def test_every_final_status_of_every_job_type_is_counted_once(stack) -> None:
    """succeeded, failed, canceled and aborted, by a worker, the API, a deadline, a compare parent,
    a cache answer: each final status counted exactly once, where the transition happens."""
    image = data_uri(cat().rotate(11))  # an image no other test sends: its first caption is a miss
    spare = {"type": "caption", "model": UNSERVED_MODEL, "image_url": image}
    with stack.client() as api:
        before = api.get("/metrics").text
        assert run(api, {"type": "caption", "model": "blip-base", "image_url": image, "cache": False}
                   )["status"] == "succeeded"
        assert run(api, {"type": "caption", "model": "blip-base", "image_url": image})["cache"] == "miss"
        assert run(api, {"type": "caption", "model": "blip-base", "image_url": image})["cache"] == "hit"
        assert run(api, {"type": "detect", "model": "faces", "image_url": image, "prompt": "detect dog",
                         "cache": False})["status"] == "failed"
        canceled = submit(api, spare).json()
        assert api.post(f"/v1/jobs/{canceled['id']}/cancel").json()["status"] == "canceled"
        late = submit(api, {**spare, "cancel_after": 0.2}).json()
        time.sleep(0.4)
        assert api.get(f"/v1/jobs/{late['id']}").json()["status"] == "aborted"
        compare = run(api, {"type": "compare", "models": ["paligemma", "faces"], "image_url": image,
                            "task": {"type": "detect", "prompt": "detect dog", "max_new_tokens": 4}})
        assert compare["status"] == "succeeded"
        after = api.get("/metrics").text

    def finished(**labels: str) -> float:
        name = "vlmq_jobs_finished_total"
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert finished(type="caption", model="blip-base", status="succeeded") == 3
    assert finished(type="detect", model="faces", status="failed") == 2  # alone, and in the compare
    assert finished(type="detect", model="paligemma", status="succeeded") == 1
    assert finished(type="caption", model=UNSERVED_MODEL, status="canceled") == 1
    assert finished(type="caption", model=UNSERVED_MODEL, status="aborted") == 1
    assert finished(type="compare", model="", status="succeeded") == 1
    assert _value(after, "vlmq_jobs_finished_total") - _value(before, "vlmq_jobs_finished_total") == 9
    _promtool_clean(after)


def _promtool_clean(text: str) -> None:
    """`promtool check metrics` (Prometheus's own linter) finds nothing to say."""
    here = Path(sys.executable).parent
    binary = shutil.which("promtool", path=str(here)) or shutil.which("promtool")
    assert binary, "promtool is missing: scripts/install_tools.sh installs it"
    done = subprocess.run([binary, "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), done.stdout + done.stderr


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


def _connections_per_process(parent: int, port: int, count: int) -> list[int]:
    """Open `count` keep-alive connections at once (as a client's pool does), one request each; how
    many each API process holds."""
    import asyncio

    import psutil

    async def burst() -> list[int]:
        async def one() -> asyncio.StreamWriter:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            await writer.drain()
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")
            return writer

        writers = await asyncio.gather(*(one() for _ in range(count)))
        try:
            return [held for child in psutil.Process(parent).children(recursive=True)
                    if (held := sum(c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
                                    for c in child.net_connections(kind="tcp")))]
        finally:
            for writer in writers:
                writer.close()

    return asyncio.run(burst())


def test_several_api_processes_sum_http_metrics_and_keep_the_fleet_figures(base_env, log_dir) -> None:
    """`vlmq api --workers 2`: each process has a share of a burst of connections (a socket each; a
    second one on the same port refused),
    /metrics from either process counts every process's requests (prometheus_client's multiprocess
    files) and still has vlmq's fleet-wide figures."""
    import httpx

    from tests.utils.processes import spawn
    from vlmq.cli.redis_server import free_port

    port = free_port()
    env = {**base_env, "VLMQ_CACHE_ENABLED": "false"}
    proc = spawn("api-2", [sys.executable, "-m", "vlmq.cli", "api", "--workers", "2", "--port", str(port)], env,
                 log_dir)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.alive() and time.monotonic() < deadline, proc.tail()
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        time.sleep(2)  # the second process: both accept from here on
        # a burst of connections is spread over both (a socket each; a shared one may give one process all)
        held = _connections_per_process(proc.pid, port, 64)
        assert len(held) == 2 and min(held) >= 16, held
        taken = subprocess.run([sys.executable, "-m", "vlmq.cli", "api", "--workers", "2", "--port", str(port)],
                               check=False, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
        assert taken.returncode == 2 and f"127.0.0.1:{port} is in use" in taken.stderr, taken.stderr
        before = httpx.get(url + "/metrics", timeout=10).text
        for _ in range(40):  # a new connection each: the kernel spreads them over both processes
            assert httpx.get(url + "/v1/models", timeout=10).status_code == 200
        job = httpx.post(url + "/v1/jobs", json={"type": "caption", "model": UNSERVED_MODEL,
                                                 "image_url": data_uri(cat())}, timeout=10).json()
        httpx.post(f"{url}/v1/jobs/{job['id']}/cancel", timeout=10)
        after = httpx.get(url + "/metrics", timeout=10).text
    finally:
        proc.stop()
    served = _value(after, "http_requests_total", handler="/v1/models") - _value(
        before, "http_requests_total", handler="/v1/models")
    assert served == 40, served
    submitted = {"type": "caption", "model": UNSERVED_MODEL}
    assert _value(after, "vlmq_jobs_submitted_total", **submitted) - _value(
        before, "vlmq_jobs_submitted_total", **submitted) == 1
    assert "vlmq_workers_online{" in after
    _promtool_clean(after)
