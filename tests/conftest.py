"""Shared fixtures: a real Redis database, the demo models, and a running stack (API + workers).

Redis: VLMQ_TEST_REDIS_URL, default redis://127.0.0.1:6379/13 (flushed at the start). The stack
is real processes: `vlmq api` under uvicorn and one `vlmq worker` per registry model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis
import torch

from tests.utils.processes import Proc, start_api, start_worker, wait_ready
from vlmq.demo import build_demo_models
from vlmq.redis_server import answers, start_embedded
from vlmq.registry import load_registry
from vlmq.settings import Settings

#: A registry model that the session stack starts no worker for.
UNSERVED_MODEL = "blip-spare"
UNSERVED_SPEC = {"adapter": "blip_caption", "source": "demo:blip-base", "tasks": ["caption"],
                 "description": "served by no worker in the test stack"}
TEST_REDIS_URL = os.environ.get("VLMQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The test Redis database, flushed. With none reachable (and none named), an embedded one."""
    url, server = TEST_REDIS_URL, None
    if not answers(url) and "VLMQ_TEST_REDIS_URL" not in os.environ:
        server = start_embedded(tmp_path_factory.mktemp("redis"))
        url = server.url
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"the tests need a Redis at {url} (set VLMQ_TEST_REDIS_URL): {exc}")
    client.flushdb()
    yield url
    if server is not None:
        server.stop()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("vlmq-data")
    build_demo_models(folder / "demo-models")
    return folder


@pytest.fixture(scope="session")
def base_env(redis_url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLMQ_")}
    env.update(
        VLMQ_REDIS_URL=redis_url,
        VLMQ_DATA_DIR=str(data_dir),
        VLMQ_URL_ALLOW_HOSTS="localhost",  # test image servers run on loopback, reached by this name only
        VLMQ_LOG_FORMAT="json",
        VLMQ_MODELS=json.dumps({UNSERVED_MODEL: UNSERVED_SPEC}),
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture(scope="session")
def settings(redis_url: str, data_dir: Path) -> Settings:
    return Settings(redis_url=redis_url, data_dir=data_dir, url_allow_hosts=["localhost"],
                    models={UNSERVED_MODEL: UNSERVED_SPEC})


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@dataclass
class Stack:
    url: str
    redis_url: str
    api: Proc
    workers: dict[str, Proc] = field(default_factory=dict)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)


@pytest.fixture(scope="session")
def stack(base_env: dict[str, str], settings: Settings, log_dir: Path) -> Stack:
    """The API and one worker per registry model, as real processes, for the whole session."""
    models = [name for name in load_registry(settings).names if name != UNSERVED_MODEL]
    workers = {model: start_worker(model, base_env, log_dir) for model in models}
    api, url = start_api(base_env, log_dir)
    try:
        wait_ready(settings.redis_url, list(workers.values()), models)
    except RuntimeError:
        for proc in [api, *workers.values()]:
            proc.stop()
        raise
    yield Stack(url, settings.redis_url, api, workers)
    for proc in [api, *workers.values()]:
        proc.stop()
