"""API keys: created by `vlmq keys create`, stored hashed, each with a rate limit and a webhook secret.

Redis:
- ``vlmq:key:{sha256(key)}``: hash: id, name, rate (requests per second), burst, webhook_secret,
  created_at. The key itself is shown once at creation and never stored.
- ``vlmq:keyid:{id}``: the hash's name, to revoke or list by id.
- ``vlmq:bucket:{id}``: the key's token bucket (tokens, stamp), refilled at `rate`, at most `burst`.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass

import redis

from vlmq.keyspace import BUCKET, KEY, KEY_ID

KEY_PREFIX = "vlmq_"

# Token bucket: KEYS[1] bucket; ARGV now, rate, burst, cost. Returns {allowed, seconds until a token}.
_TAKE = """
local rate, burst, cost = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local now = tonumber(ARGV[1])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(state[1]) or burst
local stamp = tonumber(state[2]) or now
tokens = math.min(burst, tokens + (now - stamp) * rate)
local allowed = 0
if tokens >= cost then tokens = tokens - cost; allowed = 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
local wait = 0
if allowed == 0 then wait = (cost - tokens) / rate end
return {allowed, tostring(wait)}
"""


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    rate: float  # requests per second, sustained
    burst: int
    webhook_secret: str  # whsec_<base64>, signs this key's webhooks (Standard Webhooks)
    admin: bool = False  # may use /v1/admin routes


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


#: How long an API process trusts a key it verified (a revoked key is refused within this).
VERIFIED_TTL_S = 2.0


class KeyStore:
    def __init__(self, client: redis.Redis, aclient=None) -> None:
        """`client`: blocking (CLI, workers); `aclient`: the API's asyncio client, for `averify`
        and `atake` on its event loop."""
        self.redis = client
        self.aredis = aclient
        self._take = client.register_script(_TAKE)
        self._atake = aclient.register_script(_TAKE) if aclient is not None else None
        self._verified: dict[str, tuple[float, ApiKey | None]] = {}

    def create(self, name: str, rate: float = 10.0, burst: int = 50, admin: bool = False) -> tuple[str, ApiKey]:
        """(the secret key, shown once; its record)."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        record = ApiKey(id="key_" + secrets.token_hex(6), name=name, rate=rate, burst=burst,
                        webhook_secret=new_webhook_secret(), admin=admin)
        digest = _digest(key)
        pipe = self.redis.pipeline()
        pipe.hset(KEY.format(digest), mapping={
            "id": record.id, "name": name, "rate": repr(rate), "burst": str(burst),
            "webhook_secret": record.webhook_secret, "created_at": repr(time.time()), "admin": "1" if admin else "0",
        })
        pipe.set(KEY_ID.format(record.id), digest)
        pipe.execute()
        return key, record

    def verify(self, key: str) -> ApiKey | None:
        return self._load(_digest(key))

    def by_id(self, key_id: str) -> ApiKey | None:
        digest = self.redis.get(KEY_ID.format(key_id))
        return self._load(digest.decode()) if digest is not None else None

    async def averify(self, key: str) -> ApiKey | None:
        """`verify`, remembered for `VERIFIED_TTL_S` (a key's record is read once per interval)."""
        digest = _digest(key)
        cached = self._verified.get(digest)
        if cached is not None and time.monotonic() - cached[0] < VERIFIED_TTL_S:
            return cached[1]
        found = _key(await self.aredis.hgetall(KEY.format(digest)))
        if len(self._verified) > 10_000:
            self._verified.clear()
        self._verified[digest] = (time.monotonic(), found)
        return found

    async def atake(self, key: ApiKey, cost: int = 1) -> tuple[bool, float]:
        """`take` on the asyncio client."""
        allowed, wait = await self._atake(keys=[BUCKET.format(key.id)],
                                          args=[repr(time.time()), key.rate, key.burst, cost])
        return bool(allowed), float(wait)

    def _load(self, digest: str) -> ApiKey | None:
        return _key(self.redis.hgetall(KEY.format(digest)))


    def revoke(self, key_id: str) -> bool:
        digest = self.redis.get(KEY_ID.format(key_id))
        if digest is None:
            return False
        self.redis.delete(KEY.format(digest.decode()), KEY_ID.format(key_id), BUCKET.format(key_id))
        return True

    def list(self) -> list[ApiKey]:
        keys = []
        for name in self.redis.scan_iter(KEY_ID.format("*")):
            record = self.by_id(name.decode().split(":", 2)[2])
            if record:
                keys.append(record)
        return sorted(keys, key=lambda k: k.name)

    def take(self, key: ApiKey, cost: int = 1) -> tuple[bool, float]:
        """Spend `cost` tokens of the key's bucket: (allowed, seconds to wait when not)."""
        allowed, wait = self._take(keys=[BUCKET.format(key.id)], args=[repr(time.time()), key.rate, key.burst, cost])
        return bool(allowed), float(wait)


def _key(raw: dict) -> ApiKey | None:
    if not raw:
        return None
    data = {k.decode(): v.decode() for k, v in raw.items()}
    return ApiKey(id=data["id"], name=data["name"], rate=float(data["rate"]), burst=int(data["burst"]),
                  webhook_secret=data["webhook_secret"], admin=data.get("admin") == "1")
