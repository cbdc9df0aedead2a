"""A vlmq stack of real processes for the service benchmarks: its own Redis database and data dir.

    with Stack(models=["vilt-vqa"], redis_db=10) as stack:
        stack.url, stack.redis, stack.worker_runs("vilt-vqa")
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Self

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_procs import start_api, start_worker, wait_ready
from vlmq.tasks.demo import build_demo_models


class Stack:
    def __init__(self, models: list[str], redis_db: int, env: dict[str, str] | None = None) -> None:
        self.models = models
        self.redis_url = f"redis://127.0.0.1:6379/{redis_db}"
        self.extra_env = env or {}
        self.procs = []

    def __enter__(self) -> Self:
        self.data_dir = Path(tempfile.mkdtemp(prefix="vlmq-bench-"))
        build_demo_models(self.data_dir / "demo-models")
        self.redis = redis.Redis.from_url(self.redis_url)
        self.redis.flushdb()
        env = {k: v for k, v in os.environ.items() if not k.startswith("VLMQ_")}
        env.update(VLMQ_REDIS_URL=self.redis_url, VLMQ_DATA_DIR=str(self.data_dir), VLMQ_LOG_FORMAT="text",
                   VLMQ_LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1", **self.extra_env)
        self.env = env
        logs = self.data_dir / "logs"
        self.workers = [start_worker(model, env, logs) for model in self.models]
        self.api, self.url = start_api(env, logs)
        self.procs = [self.api, *self.workers]
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        for worker, model in zip(self.workers, self.models, strict=True):
            wait_ready(self.redis, worker, model, timeout=300)

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()

    def start_workers(self) -> None:
        self.workers = [start_worker(model, self.env, self.data_dir / "logs") for model in self.models]
        self.procs = [self.api, *self.workers]
        self._wait_ready()

    def worker_runs(self, model: str) -> int:
        """Jobs the model's workers have run (their batch-size histogram's sum)."""
        return int(float(self.redis.hget("vlmq:metrics:batch_size", f"model={model}|sum") or 0))

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.stop()
        self.redis.flushdb()
