"""Processes of the benchmarks (throughput.py, and stack.py for the service benchmarks): the API,
model workers, the load generator, CPU accounting, and cleaning the benchmark's own keys out of Redis.

Every process is started here with `subprocess.Popen` and stopped by its own PID (SIGTERM, then
SIGKILL after a timeout); nothing is found or killed by name.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import httpx
import psutil
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

    def rss_mib(self) -> float | None:
        try:
            return psutil.Process(self.pid).memory_info().rss / 2**20
        except psutil.Error:
            return None

    def cpu_s(self) -> float:
        try:
            t = psutil.Process(self.pid).cpu_times()
            return t.user + t.system
        except psutil.Error:
            return 0.0

    def stop(self, timeout: float = 30) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def spawn(name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> Proc:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with open(log, "ab") as handle:
        process = subprocess.Popen(argv, env=env, stdout=handle, stderr=subprocess.STDOUT)
    return Proc(name, process, log)


def start_api(env: dict[str, str], log_dir: Path, timeout: float = 90, bare: bool = False) -> tuple[Proc, str]:
    """`python -m vlmq.cli api` on a free port, or with `bare` benchmarks/bare_api.py (FastAPI, no vlmq
    code); returns it with its URL once /healthz answers."""
    if bare:
        return start_server("bare-api", [sys.executable, str(Path(__file__).with_name("bare_api.py"))], env, log_dir,
                            timeout)
    return start_server("api", [sys.executable, "-m", "vlmq.cli", "api"], env, log_dir, timeout)


def start_server(name: str, argv: list[str], env: dict[str, str], log_dir: Path, timeout: float = 90
                 ) -> tuple[Proc, str]:
    """`argv --port <a free port>`, returned with its URL once its /healthz answers."""
    port = free_port()
    proc = spawn(name, [*argv, "--port", str(port)], env, log_dir)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{name} exited:\n{proc.tail()}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.stop()
    raise RuntimeError(f"{name} did not start in {timeout}s:\n{proc.tail()}")


def start_worker(model: str, env: dict[str, str], log_dir: Path, threads: int | None = None) -> Proc:
    """`python -m vlmq.cli worker --model MODEL` (with VLMQ_TORCH_THREADS=threads when given)."""
    if threads is not None:
        env = {**env, "VLMQ_TORCH_THREADS": str(threads)}
    return spawn(f"worker-{model}", [sys.executable, "-m", "vlmq.cli", "worker", "--model", model], env, log_dir)


def wait_ready(client: redis.Redis, proc: Proc, model: str, timeout: float = 180) -> float:
    """Until the worker `proc` announces itself ready for `model`; returns the seconds it took."""
    fleet = Fleet(client)
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited ({proc.process.returncode}):\n{proc.tail()}")
        workers = fleet.describe([model])[model].workers
        if any(w.state is WorkerState.ready and w.pid == proc.pid for w in workers):
            return time.monotonic() - began
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready in {timeout}s:\n{proc.tail()}")


def run_loadgen(args: list[str], log_dir: Path) -> tuple[dict, float]:
    """Run benchmarks/loadgen.py to completion: (its JSON result, its own CPU seconds)."""
    out = log_dir / f"loadgen-{time.time_ns()}.json"
    argv = [sys.executable, str(Path(__file__).with_name("loadgen.py")), *args]
    with open(out, "wb") as handle, open(log_dir / "loadgen.err", "ab") as err:
        process = subprocess.Popen(argv, stdout=handle, stderr=err)
        _pid, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"loadgen failed ({process.returncode}): {(log_dir / 'loadgen.err').read_text()[-2000:]}")
    return json.loads(out.read_text()), usage.ru_utime + usage.ru_stime


def redis_server_proc() -> psutil.Process | None:
    for proc in psutil.process_iter(["name"]):
        if (proc.info.get("name") or "").startswith("redis-server"):
            return proc
    return None


@dataclass
class CpuWatch:
    """Where the machine's CPU went during a phase: this benchmark's processes vs everything else."""

    procs: list[Proc] = field(default_factory=list)
    began: float = 0.0

    def __enter__(self) -> Self:
        self.began = time.perf_counter()
        self.sys0 = psutil.cpu_times()
        self.self0 = self._self_cpu()
        self.proc0 = {p.pid: p.cpu_s() for p in self.procs}
        self.redis = redis_server_proc()
        self.redis0 = self._redis_cpu()
        return self

    def _self_cpu(self) -> float:
        t = psutil.Process().cpu_times()
        return t.user + t.system

    def _redis_cpu(self) -> float:
        try:
            t = self.redis.cpu_times() if self.redis else None
            return t.user + t.system if t else 0.0
        except psutil.Error:
            return 0.0

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.began
        now = psutil.cpu_times()
        idle = (now.idle - self.sys0.idle) + (getattr(now, "iowait", 0) - getattr(self.sys0, "iowait", 0))
        total = sum(now) - sum(self.sys0)
        cores = psutil.cpu_count() or 1
        self.busy_cores = cores * (total - idle) / total if total > 0 else 0.0
        mine = self._self_cpu() - self.self0 + sum(p.cpu_s() - self.proc0.get(p.pid, 0.0) for p in self.procs)
        self.extra_s = 0.0  # CPU seconds of short-lived children (the load generator), added by the caller
        self.mine_s = mine
        self.redis_s = self._redis_cpu() - self.redis0

    @property
    def mine_cores(self) -> float:
        return (self.mine_s + self.extra_s) / self.wall

    @property
    def other_cores(self) -> float:
        """Busy cores not used by this benchmark's processes nor Redis (other users of the machine)."""
        return max(0.0, self.busy_cores - self.mine_cores - self.redis_s / self.wall)


def wait_quiet(max_busy_cores: float = 0.3, window_s: float = 3.0, timeout_s: float = 600.0,
               log=lambda message: None) -> float:
    """Wait until the machine is quiet: fewer than `max_busy_cores` busy over `window_s` (call it while
    this benchmark's own processes idle). Returns the seconds waited (gives up after `timeout_s`)."""
    began = time.monotonic()
    cores = psutil.cpu_count() or 1
    told = False
    while True:
        busy = cores * psutil.cpu_percent(interval=window_s) / 100
        if busy < max_busy_cores:
            return time.monotonic() - began
        if time.monotonic() - began > timeout_s:
            log(f"machine still busy ({busy:.2f} cores) after {timeout_s:.0f}s: going on anyway")
            return time.monotonic() - began
        if not told:
            log(f"machine busy ({busy:.2f} cores used by others): waiting for a quiet moment")
            told = True


# --- Redis hygiene ----------------------------------------------------------------------------


def clean_models(client: redis.Redis, models: list[str]) -> None:
    """Remove the benchmark models' queues, lanes, fleet and metrics entries (never other keys)."""
    from vlmq.jobs import Lane
    from vlmq.queues import queue_keys, queue_name

    keys: list[str] = []
    for model in models:
        for lane in Lane:
            keys += queue_keys(model, lane)
            keys += [f"_kombu.binding.{queue_name(model, lane)}", f"_kombu.binding_permanent.{queue_name(model, lane)}"]
            keys += [f"vlmq:tickets:{model}:{lane.value}", f"vlmq:taken:{model}:{lane.value}"]
        keys += [f"vlmq:throughput:{model}", f"vlmq:revision:{model}", f"vlmq:workers:{model}",
                 f"vlmq:setup-error:{model}", f"vlmq:cache:generation:{model}"]
        for pattern in (f"vlmq:backlog:{model}:*", f"vlmq:worker:{model}@*"):
            keys += [k.decode() for k in client.scan_iter(pattern, count=1000)]
    for model in models:
        index = f"vlmq:cache:model:{model}"
        exact = [k.decode() for k in client.zrange(index, 0, -1)]
        keys += exact + [index]
        client.hdel("vlmq:cache:revision", model)
        # anything else named after the model (vlmq:pending:<model>, newer key types): the names are the
        # benchmark's own (bench-*), nobody else's keys contain them
        keys += [k.decode() for k in client.scan_iter(f"*{model}*", count=1000)
                 if not k.startswith(b"vlmq:job:") and not k.startswith(b"vlmq:metrics:")]
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])
    for metrics_key in client.scan_iter("vlmq:metrics:*", count=1000):
        fields = [f for f in client.hkeys(metrics_key)
                  if any(f"model={m}|" in f.decode() + "|" for m in models)]
        if fields:
            client.hdel(metrics_key, *fields)


def model_job_ids(client: redis.Redis, models: list[str]) -> list[str]:
    """Ids of the job records (in this Redis database) of the benchmark's models."""
    wanted = {m.encode() for m in models}
    keys = list(client.scan_iter("vlmq:job:*", count=1000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hget(key, "model")
    return [k.decode().removeprefix("vlmq:job:") for k, m in zip(keys, pipe.execute()) if m in wanted]


def clean_jobs(client: redis.Redis, job_ids: list[str]) -> None:
    """Delete the benchmark's job records, event streams and images, and drop them from `recent`."""
    for start in range(0, len(job_ids), 1000):
        chunk = job_ids[start : start + 1000]
        pipe = client.pipeline(transaction=False)
        pipe.delete(*[f"vlmq:job:{i}" for i in chunk], *[f"vlmq:events:{i}" for i in chunk])
        pipe.zrem("vlmq:recent:anonymous", *chunk)
        pipe.execute()


def queued_job_ids(client: redis.Redis, model: str) -> list[str]:
    """The job ids still in a model's queues (kombu messages: the task id is the job id)."""
    from vlmq.jobs import Lane
    from vlmq.queues import queue_keys

    ids = []
    for lane in Lane:
        for key in queue_keys(model, lane):
            for raw in client.lrange(key, 0, -1):
                try:
                    ids.append(json.loads(raw)["headers"]["id"])
                except (ValueError, KeyError):
                    pass
    return ids
