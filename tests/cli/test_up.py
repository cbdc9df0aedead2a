"""`vlmq up` as a new user runs it: its own embedded Redis, demo models built, every process up;
`vlmq submit --wait` gets a result through it; a second shell (only VLMQ_DATA_DIR set) finds its
embedded Redis and its API; Ctrl-C stops every process it started and removes its run-state file."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import redis

from tests.utils.images import astronaut, encode
from vlmq.cli.commands import EXIT_ALREADY_UP
from vlmq.cli.redis_server import free_port
from vlmq.keys import KeyStore
from vlmq.keyspace import ANONYMOUS_SECRET


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

        _second_shell_finds_the_stack(tmp_path, env, up.pid, children)
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
    assert not (tmp_path / "data" / "run.json").exists()


def _second_shell_finds_the_stack(tmp_path: Path, env: dict[str, str], up_pid: int,
                                  children: list[psutil.Process]) -> None:
    """`vlmq keys ...` and `vlmq models` from another folder with only VLMQ_DATA_DIR set use the embedded
    Redis and the API of the running `vlmq up` (through VLMQ_DATA_DIR/run.json), not 6379 or port 8000."""
    redis_server = next(" ".join(c.cmdline()) for c in children if "redis-server" in " ".join(c.cmdline()))
    port = re.search(r"(?:--port |127\.0\.0\.1:)(\d+)", redis_server).group(1)  # redis-server retitles itself
    embedded_url = f"redis://127.0.0.1:{port}/0"
    embedded = redis.Redis.from_url(embedded_url)
    state = json.loads((tmp_path / "data" / "run.json").read_text())
    assert state["pid"] == up_pid and state["redis_url"] == embedded_url, state
    _, record = KeyStore(embedded).create("second-shell-probe")

    second = {k: v for k, v in env.items() if not k.startswith("VLMQ_")}
    second.update(VLMQ_DATA_DIR=env["VLMQ_DATA_DIR"], COLUMNS="80")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def vlmq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "vlmq.cli", *args], env=second, cwd=elsewhere,
                              capture_output=True, text=True, timeout=60, check=False)

    listed = vlmq("keys", "list")  # read-only first: a wrong Redis is never written to
    assert listed.returncode == 0 and record.id in listed.stdout, listed.stdout + listed.stderr
    secret = vlmq("keys", "secret")
    assert secret.returncode == 0, secret.stderr
    assert secret.stdout.strip() == embedded.get(ANONYMOUS_SECRET).decode()
    models = vlmq("models")
    assert models.returncode == 0 and "faces" in models.stdout, models.stderr
    again = vlmq("up", "--embedded-redis", "--models", "faces", "--no-flower", "--no-frontend")
    assert again.returncode == EXIT_ALREADY_UP and f"pid {up_pid}" in again.stderr, again.stderr
