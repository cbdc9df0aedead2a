"""`Idempotency-Key`: the same key and body return the same job (for `idempotency_ttl_s`); the same
key with another body is a 409; a second request while the first is still being accepted, a 409.

Redis: ``vlmq:idem:{owner}:{sha256(key)}`` -> ``pending:<body hash>`` while the first request is
accepted, then ``job:<body hash>:<job id>``. Keys are per caller: two API keys never collide.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import redis.asyncio as aioredis

from vlmq.api.errors import ApiError
from vlmq.keyspace import IDEM

MAX_KEY_LENGTH = 255


def body_hash(request_json: Any, image: bytes | None) -> str:
    digest = hashlib.sha256(json.dumps(request_json, sort_keys=True, separators=(",", ":")).encode())
    if image is not None:
        digest.update(hashlib.sha256(image).digest())
    return digest.hexdigest()


class Idempotency:
    def __init__(self, client: aioredis.Redis, ttl_s: int) -> None:
        self.redis = client
        self.ttl_s = ttl_s

    def _key(self, owner: str, key: str) -> str:
        if not key or len(key) > MAX_KEY_LENGTH:
            raise ApiError(422, "invalid_request", f"Idempotency-Key: 1 to {MAX_KEY_LENGTH} characters",
                           field="Idempotency-Key")
        return IDEM.format(owner, hashlib.sha256(key.encode()).hexdigest())

    async def begin(self, owner: str, key: str, digest: str) -> str | None:
        """None: go on and create the job. A job id: the request was already accepted as that job."""
        name = self._key(owner, key)
        if await self.redis.set(name, f"pending:{digest}", nx=True, ex=self.ttl_s):
            return None
        value = (await self.redis.get(name) or b"").decode()
        state, _, rest = value.partition(":")
        stored_digest, _, job_id = rest.partition(":")
        if stored_digest != digest:
            raise ApiError(409, "idempotency_conflict",
                           "Idempotency-Key was already used with a different request body", field="Idempotency-Key")
        if state == "pending":
            raise ApiError(409, "idempotency_in_progress",
                           "a request with this Idempotency-Key is still being accepted; retry shortly",
                           field="Idempotency-Key", headers={"Retry-After": "1"})
        return job_id

    async def complete(self, owner: str, key: str, digest: str, job_id: str) -> None:
        await self.redis.set(self._key(owner, key), f"job:{digest}:{job_id}", ex=self.ttl_s)

    async def abandon(self, owner: str, key: str) -> None:
        await self.redis.delete(self._key(owner, key))
