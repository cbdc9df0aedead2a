"""Shared fixtures: a real Redis database, the demo models, and a running stack (API + workers).

Redis: VLMQ_TEST_REDIS_URL, default redis://127.0.0.1:6379/13 (flushed at the start; under
pytest-xdist, worker gwN takes the database N below it, and starts its own stack). The stack
is real processes: `vlmq api` under uvicorn and one `vlmq worker` per registry model.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis
import torch

from tests.utils.processes import (
    Proc,
    group_worker_name,
    spawn,
    start_api,
    start_group_worker,
    start_worker,
    stop_all,
    wait_ready,
)
from tests.utils.slow_model import SLOW_MODEL, build_slow_blip
from vlmq.cli.redis_server import answers, start_embedded
from vlmq.registry import load_registry
from vlmq.settings import Settings
from vlmq.tasks.demo import build_demo_models

#: Registry models that the session stack starts no worker for (one with a tiny queue limit).
UNSERVED_MODEL = "blip-spare"
FULL_MODEL = "blip-full"
FULL_QUEUE_LIMIT = 2
#: The slow weights again, for tests that kill, stop or restart their own workers of it.
CRASH_MODEL = "blip-crash"
#: Asks for 8-bit quantization: on a machine without CUDA its worker must refuse to start.
QUANTIZED_MODEL = "blip-8bit"
#: Lane tests start and stop their own workers of these (one with a tiny per-lane limit).
LANES_MODEL = "blip-lanes"
LANES_SMALL_MODEL = "blip-lanes-small"
#: Its weights are a copy the cache tests change, to see cached answers dropped.
REVISION_MODEL = "blip-rev"
#: A model group the group tests start their own group workers for (tests/e2e/test_groups.py): three
#: captioners, a slow one (its load takes a while) and one whose load fails.
TEST_GROUP = "grp-test"
GROUP_MEMBERS = ("grp-a", "grp-b", "grp-c")
GROUP_SLOW, GROUP_BAD = "grp-slow", "grp-bad"
GROUP_MAX_LOADED = 2
UNSERVED = {UNSERVED_MODEL, FULL_MODEL, CRASH_MODEL, QUANTIZED_MODEL, LANES_MODEL, LANES_SMALL_MODEL, REVISION_MODEL,
            *GROUP_MEMBERS, GROUP_SLOW, GROUP_BAD}
TEST_REDIS_URL = os.environ.get("VLMQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
_XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
if _XDIST_WORKER != "gw0":  # pytest -n: each xdist worker its own database (13, 12, ...) and its own stack
    _base, _, _db = TEST_REDIS_URL.rpartition("/")
    TEST_REDIS_URL = f"{_base}/{(int(_db) - int(_XDIST_WORKER[2:])) % 16}"
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
def extra_models(data_dir: Path) -> dict[str, dict]:
    """Test-only registry entries: models without workers, and a slow captioner (tests/utils/slow_model.py)."""
    slow = build_slow_blip(data_dir / "demo-models", data_dir / "slow-models" / SLOW_MODEL)
    revision_copy = data_dir / "revision-model"
    if not revision_copy.exists():
        shutil.copytree(data_dir / "demo-models" / "blip-vqa", revision_copy)
    caption = {"adapter": "blip_caption", "source": "demo:blip-base", "tasks": ["caption"]}
    return {
        UNSERVED_MODEL: {**caption, "description": "served by no worker in the test stack"},
        FULL_MODEL: {**caption, "queue_limit": FULL_QUEUE_LIMIT, "description": "no worker, tiny queue limit"},
        SLOW_MODEL: {**caption, "source": str(slow), "max_batch_size": 4, "description": "slow on purpose"},
        CRASH_MODEL: {**caption, "source": str(slow), "max_batch_size": 1, "description": "killed by tests"},
        QUANTIZED_MODEL: {**caption, "quantization": "8bit", "description": "needs CUDA"},
        LANES_MODEL: {**caption, "max_batch_size": 4, "description": "lane tests"},
        LANES_SMALL_MODEL: {**caption, "queue_limit": 3, "description": "lane tests, 3 jobs per lane"},
        REVISION_MODEL: {"adapter": "blip_vqa", "source": str(revision_copy), "tasks": ["vqa"],
                         "description": "cache invalidation tests"},
        **{member: {**caption, "max_batch_size": 2, "description": "group tests"} for member in GROUP_MEMBERS},
        GROUP_SLOW: {**caption, "source": str(slow), "max_batch_size": 2, "description": "group tests: slow to load"},
        GROUP_BAD: {**caption, "source": str(data_dir / "no-such-model"), "description": "group tests: cannot load"},
    }


@pytest.fixture(scope="session")
def extra_groups() -> dict[str, dict]:
    return {TEST_GROUP: {"models": [*GROUP_MEMBERS, GROUP_SLOW, GROUP_BAD], "max_loaded": GROUP_MAX_LOADED}}


@pytest.fixture(scope="session")
def base_env(redis_url: str, data_dir: Path, extra_models: dict[str, dict], extra_groups: dict[str, dict]
             ) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLMQ_")}
    env.update(
        VLMQ_REDIS_URL=redis_url,
        VLMQ_DATA_DIR=str(data_dir),
        VLMQ_BLOB_URL=(data_dir / "blobs").as_uri(),  # shared by every process, whatever its data dir
        VLMQ_URL_ALLOW_HOSTS="localhost",  # test image servers run on loopback, reached by this name only
        VLMQ_LOG_FORMAT="json",
        VLMQ_MODELS=json.dumps(extra_models),
        VLMQ_GROUPS=json.dumps(extra_groups),
        VLMQ_WEBHOOK_BACKOFF_S="0.2",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture(scope="session")
def settings(redis_url: str, data_dir: Path, extra_models: dict[str, dict], extra_groups: dict[str, dict]
             ) -> Settings:
    return Settings(redis_url=redis_url, data_dir=data_dir, url_allow_hosts=["localhost"], models=extra_models,
                    groups=extra_groups, webhook_backoff_s=0.2, blob_url=(data_dir / "blobs").as_uri())


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@dataclass
class Stack:
    url: str
    redis_url: str
    api: Proc
    workers: dict[str, Proc] = field(default_factory=dict)
    webhooks: Proc | None = None

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)


@pytest.fixture(scope="session")
def stack(base_env: dict[str, str], settings: Settings, log_dir: Path) -> Stack:
    """The API, one worker per registry model and a group worker per model group (as `vlmq up` starts
    them), as real processes, for the whole session."""
    registry = load_registry(settings)
    groups = [name for name in registry.groups if name != TEST_GROUP]
    models = [name for name in registry.names if name not in UNSERVED and registry.group_of(name) not in groups]
    workers = {model: start_worker(model, base_env, log_dir) for model in models}
    group_workers = {group: start_group_worker(group, base_env, log_dir) for group in groups}
    webhooks = spawn("webhooks", [sys.executable, "-m", "vlmq.cli", "webhooks"], base_env, log_dir)
    api, url = start_api(base_env, log_dir)
    procs = [api, webhooks, *workers.values(), *group_workers.values()]
    try:
        wait_ready(settings.redis_url, list(workers.values()), models)
        for group, proc in group_workers.items():
            group_worker_name(settings.redis_url, proc, group)
    except RuntimeError:
        stop_all(procs)
        raise
    yield Stack(url, settings.redis_url, api, {**workers, **group_workers}, webhooks)
    stop_all(procs)
