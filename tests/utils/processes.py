"""Real processes for tests: the API under uvicorn and model workers, started and stopped by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from vlmq.cli.redis_server import free_port
from vlmq.fleet import Fleet, WorkerState


@dataclass
class Proc:
    name: str
    process: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def kill9(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def stop_all(procs: list[Proc], timeout: float = 30) -> None:
    """SIGTERM to every process at once, then wait for each: their shutdowns overlap."""
    for proc in procs:
        proc.signal(signal.SIGTERM)
    for proc in procs:
        proc.stop(timeout=timeout)


def spawn(name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> Proc:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}-{time.time_ns()}.log"
    handle = open(log, "wb")  # noqa: SIM115
    process = subprocess.Popen(argv, env=env, stdout=handle, stderr=subprocess.STDOUT)
    return Proc(name, process, log)


def start_api(env: dict[str, str], log_dir: Path, port: int | None = None) -> tuple[Proc, str]:
    port = port or free_port()
    proc = spawn("api", [sys.executable, "-m", "vlmq.cli", "api", "--port", str(port)], env, log_dir)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"API exited:\n{proc.tail()}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.stop()
    raise RuntimeError(f"API did not start:\n{proc.tail()}")


def start_worker(model: str, env: dict[str, str], log_dir: Path) -> Proc:
    argv = [sys.executable, "-m", "vlmq.cli", "worker", "--model", model]
    return spawn(f"worker-{model}", argv, env, log_dir)


def start_group_worker(group: str, env: dict[str, str], log_dir: Path) -> Proc:
    argv = [sys.executable, "-m", "vlmq.cli", "worker", "--group", group]
    return spawn(f"group-{group}", argv, env, log_dir)


def group_worker_name(redis_url: str, proc: Proc, group: str, timeout: float = 120) -> str:
    """Once the group worker `proc` has announced itself: its name."""
    fleet = Fleet(redis.Redis.from_url(redis_url))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited ({proc.process.returncode}):\n{proc.tail()}")
        for worker in fleet.describe_groups([group])[group]:
            if worker.pid == proc.pid:
                return worker.name
        time.sleep(0.25)
    raise RuntimeError(f"group worker not up in time:\n{proc.tail(15)}")


def wait_ready(redis_url: str, procs: list[Proc], models: list[str], timeout: float = 120) -> None:
    """Until each model has as many ready workers as were started for it here."""
    fleet = Fleet(redis.Redis.from_url(redis_url))
    wanted: dict[str, int] = {}
    for model in models:
        wanted[model] = wanted.get(model, 0) + 1
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited ({proc.process.returncode}):\n{proc.tail()}")
        described = fleet.describe(list(wanted))
        ready = {m: sum(1 for w in f.workers if w.state is WorkerState.ready and w.pid in {p.pid for p in procs})
                 for m, f in described.items()}
        if all(ready[m] >= n for m, n in wanted.items()):
            return
        time.sleep(0.25)
    raise RuntimeError("workers not ready in time:\n" + "\n".join(p.tail(15) for p in procs))
