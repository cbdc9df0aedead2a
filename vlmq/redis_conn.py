"""Redis connections for every part of vlmq, from one URL: plain Redis or Sentinel.

`VLMQ_REDIS_URL` is `redis://host:port/db` (or `rediss://`, `unix://`), or for a Redis with
replicas under Sentinel, `sentinel://host1:26379;sentinel://host2:26379/db` with
`VLMQ_REDIS_SENTINEL_MASTER` naming the master (and `VLMQ_REDIS_PASSWORD` /
`VLMQ_REDIS_SENTINEL_PASSWORD` if set). The job store, the API's event reader and Celery's
broker all follow the master through a failover.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from vlmq.settings import Settings

CONNECT_TIMEOUT_S = 2
SOCKET_TIMEOUT_S = 10


def is_sentinel(url: str) -> bool:
    return url.startswith("sentinel://")


def sentinel_hosts(url: str) -> tuple[list[tuple[str, int]], int]:
    """([(host, port)], db) of `sentinel://h1:26379;sentinel://h2:26379/0`."""
    hosts, db = [], 0
    for part in url.split(";"):
        parts = urlsplit(part.strip())
        hosts.append((parts.hostname or "127.0.0.1", parts.port or 26379))
        if parts.path.strip("/"):
            db = int(parts.path.strip("/"))
    return hosts, db


def _sentinel_args(settings: Settings) -> tuple[list[tuple[str, int]], int, dict[str, Any], dict[str, Any]]:
    if not settings.redis_sentinel_master:
        raise ValueError("a sentinel:// VLMQ_REDIS_URL needs VLMQ_REDIS_SENTINEL_MASTER")
    hosts, db = sentinel_hosts(settings.redis_url)
    sentinel_kwargs = {}
    if settings.redis_sentinel_password:
        sentinel_kwargs["password"] = settings.redis_sentinel_password.get_secret_value()
    master_kwargs: dict[str, Any] = {"db": db}
    if settings.redis_password:
        master_kwargs["password"] = settings.redis_password.get_secret_value()
    return hosts, db, sentinel_kwargs, master_kwargs


def sync_client(settings: Settings) -> redis.Redis:
    """A binary-safe client (values are bytes) for the store, fleet, keys and metrics."""
    # Fail fast when Redis is away (callers answer 503, or a worker restarts): two quick retries.
    options = {"socket_connect_timeout": CONNECT_TIMEOUT_S, "socket_timeout": SOCKET_TIMEOUT_S,
               "health_check_interval": 15, "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), 2)}
    if not is_sentinel(settings.redis_url):
        password = settings.redis_password.get_secret_value() if settings.redis_password else None
        return redis.Redis.from_url(settings.redis_url, password=password, **options) if password else \
            redis.Redis.from_url(settings.redis_url, **options)
    hosts, _db, sentinel_kwargs, master_kwargs = _sentinel_args(settings)
    sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_kwargs, socket_connect_timeout=CONNECT_TIMEOUT_S)
    return sentinel.master_for(settings.redis_sentinel_master, **master_kwargs, **options)


def async_client(settings: Settings, socket_timeout: float) -> aioredis.Redis:
    """The API's asyncio client: submits, and blocking stream reads for SSE and Prefer: wait. Like
    `sync_client`, a dropped connection (Redis restarted) is retried twice at once, then a 503."""
    options = {"socket_connect_timeout": CONNECT_TIMEOUT_S, "socket_timeout": socket_timeout,
               "health_check_interval": 15, "retry": AsyncRetry(ExponentialBackoff(cap=0.2, base=0.02), 2)}
    if not is_sentinel(settings.redis_url):
        if settings.redis_password:
            options["password"] = settings.redis_password.get_secret_value()
        return aioredis.Redis.from_url(settings.redis_url, **options)
    hosts, _db, sentinel_kwargs, master_kwargs = _sentinel_args(settings)
    sentinel = AsyncSentinel(hosts, sentinel_kwargs=sentinel_kwargs, socket_connect_timeout=CONNECT_TIMEOUT_S)
    return sentinel.master_for(settings.redis_sentinel_master, **master_kwargs, **options)


def broker_options(settings: Settings) -> dict[str, Any]:
    """Celery broker transport options for Sentinel (none for plain Redis)."""
    if not is_sentinel(settings.redis_url):
        return {}
    options: dict[str, Any] = {"master_name": settings.redis_sentinel_master}
    if settings.redis_sentinel_password:
        options["sentinel_kwargs"] = {"password": settings.redis_sentinel_password.get_secret_value()}
    return options
