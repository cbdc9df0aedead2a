"""The long-lived objects one API process holds, built once at start-up from `Settings`."""

from __future__ import annotations

from dataclasses import dataclass

import redis
import redis.asyncio as aioredis
from celery import Celery

from vlmq.admission import Admission
from vlmq.api.events import BLOCK_MS
from vlmq.blobs import BlobStore, blob_store
from vlmq.cache import AnswerCache
from vlmq.fleet import Fleet
from vlmq.jobs import JobRecord
from vlmq.keys import KeyStore
from vlmq.lanes import Lanes
from vlmq.metrics_store import MetricsStore
from vlmq.notify import Notifier
from vlmq.redis_conn import async_client, sync_client
from vlmq.registry import Registry, load_registry
from vlmq.settings import Settings
from vlmq.store import JobStore
from vlmq.tasks.app import make_celery


@dataclass
class Services:
    settings: Settings
    registry: Registry
    redis: redis.Redis
    aredis: aioredis.Redis
    blobs: BlobStore
    admission: Admission
    store: JobStore
    fleet: Fleet
    celery: Celery  # webhook deliveries go out through it (their own queue)
    keys: KeyStore
    notifier: Notifier
    metrics: MetricsStore
    lanes: Lanes
    cache: AnswerCache | None

    @classmethod
    def build(cls, settings: Settings, registry: Registry | None = None) -> Services:
        client = sync_client(settings)
        aclient = async_client(settings, BLOCK_MS / 1000 + 10)
        celery = make_celery(settings)
        return cls(
            settings=settings,
            registry=registry or load_registry(settings),
            redis=client,
            aredis=aclient,
            blobs=blob_store(settings),
            admission=Admission(aclient, settings.job_ttl_s),
            store=JobStore(client, settings.job_ttl_s),
            fleet=Fleet(client),
            celery=celery,
            keys=KeyStore(client, aclient),
            notifier=Notifier(celery.send_task),
            metrics=MetricsStore(client),
            lanes=Lanes(client, settings.job_ttl_s),
            cache=AnswerCache(settings, client) if settings.cache_enabled else None,
        )

    def place(self, record: JobRecord) -> tuple[int | None, float | None]:
        """(position in its lane, estimated seconds until it starts) of a queued job."""
        if record.model is None or record.model not in self.registry:
            return None, None
        return self.lanes.place(record, self.registry.get(record.model).max_batch_size)

    async def aclose(self) -> None:
        if self.cache is not None:
            self.cache.close()
        self.celery.close()
        self.redis.close()
        await self.aredis.aclose()
