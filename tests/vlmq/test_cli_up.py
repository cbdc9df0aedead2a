"""`vlmq up` as a new user runs it: its own embedded Redis, demo models built, every process up;
`vlmq submit --wait` gets a result through it; Ctrl-C stops every process it started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from tests.utils.images import astronaut, encode
from vlmq.redis_server import free_port


def _wait_ready(url: str, models: set[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            listed = {m["name"]: m for m in httpx.get(url + "/v1/models", timeout=2).json()["models"]}
            if all(listed[m]["ready"] for m in models):
                return
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"vlmq up: models {models} not ready in {timeout}s")


def test_up_runs_everything_and_stops_everything(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("api", "flower", "frontend")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLMQ_")}
    env.update(VLMQ_DATA_DIR=str(tmp_path / "data"), VLMQ_API_PORT=str(ports["api"]),
               VLMQ_FLOWER_PORT=str(ports["flower"]), VLMQ_FRONTEND_PORT=str(ports["frontend"]),
               VLMQ_LOG_FORMAT="text", PYTHONUNBUFFERED="1")
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115
    up = subprocess.Popen([sys.executable, "-m", "vlmq.cli", "up", "--embedded-redis", "--models", "blip-base,faces"],
                          env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{ports['api']}"
    try:
        _wait_ready(url, {"blip-base", "faces"})
        children = psutil.Process(up.pid).children(recursive=True)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        assert "redis-server" in names and "flower" in names and "frontend" in names, names
        assert names.count("worker --model") == 2, names
        assert (tmp_path / "data" / "demo-models" / "blip-base" / "config.json").is_file()
        assert httpx.get(f"http://127.0.0.1:{ports['flower']}/api/workers", timeout=5).status_code == 200

        image = tmp_path / "astronaut.png"
        image.write_bytes(encode(astronaut()))
        done = subprocess.run(
            [sys.executable, "-m", "vlmq.cli", "submit", str(image), "--type", "detect", "--model", "faces",
             "--prompt", "detect face", "--wait"],
            env={**env, "VLMQ_API_URL": url}, capture_output=True, timeout=120, cwd=tmp_path, check=False,
        )
        assert done.returncode == 0, done.stderr.decode()
        job = json.loads(done.stdout)
        assert job["status"] == "succeeded" and job["output"]["boxes"], job
    finally:
        up.send_signal(signal.SIGINT)
        time.sleep(0.2)
        up.send_signal(signal.SIGINT)  # an impatient second Ctrl-C must not leave orphans
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
            raise
        log.close()
    time.sleep(0.5)
    alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not alive, [" ".join(c.cmdline()) for c in alive]
    assert b"vlmq is up" in (tmp_path / "up.log").read_bytes()
