"""Which secret signs a job's webhooks: its API key's, or the service's own for anonymous jobs."""

from __future__ import annotations

import redis

from vlmq.keys import KeyStore, new_webhook_secret
from vlmq.keyspace import ANONYMOUS_SECRET
from vlmq.settings import Settings
from vlmq.store import ANONYMOUS


def anonymous_secret(client: redis.Redis, settings: Settings) -> str:
    """`VLMQ_WEBHOOK_SECRET`, or one generated once and kept in Redis (shared by every process)."""
    if settings.webhook_secret is not None:
        return settings.webhook_secret.get_secret_value()
    client.set(ANONYMOUS_SECRET, new_webhook_secret(), nx=True)
    return client.get(ANONYMOUS_SECRET).decode()


def secret_for(owner: str, keys: KeyStore, client: redis.Redis, settings: Settings) -> str:
    if owner == ANONYMOUS:
        return anonymous_secret(client, settings)
    key = keys.by_id(owner)
    if key is None:
        raise LookupError(f"the API key {owner} was revoked: its webhooks are not sent")
    return key.webhook_secret
