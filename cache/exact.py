"""The exact tier, in Redis: same scope, same normalised question -> the job that answers it.

Keys (shared by every API replica, every change one atomic script):

- ``vlmq:cache:x:{scope digest}:{sha1(normalised question)}``: string, the job id; expires
  after `cache_ttl_s`. Set with NX by `claim`, so two identical requests that race start one job
  (the loser gets the winner's job id and joins it).
- ``vlmq:cache:model:{model}``: sorted set of that model's exact keys, scored by when each
  expires; expired members are pruned on every claim, and past `cache_max_entries` the ones
  closest to expiry (the oldest) are dropped with their keys. `clear(model)` reads it.
- ``vlmq:cache:revision``: hash, model -> the weights revision last seen (`swap_revision`).

Values are job ids, never outputs: the API reads the job record for the output, or joins the job
while it is queued or running, and calls `forget` when the job it points to failed or expired.
"""

from __future__ import annotations

import time

import redis

from vlmq.cache.normalize import question_digest
from vlmq.cache.scope import CacheScope
from vlmq.keyspace import CACHE_PREFIX, CACHE_REVISIONS, EXACT, MODEL_INDEX

_CLAIM = """
local cur = redis.call('GET', KEYS[1])
if cur then
  if cur == ARGV[1] then return false end
  return cur
end
local ttl = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
redis.call('ZADD', KEYS[2], now + ttl, KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if over > 0 then
  local old = redis.call('ZRANGE', KEYS[2], 0, over - 1)
  for _, key in ipairs(old) do
    redis.call('DEL', key)
    redis.call('ZREM', KEYS[2], key)
  end
end
redis.call('EXPIRE', KEYS[2], ttl + 60)
return false
"""

_FORGET = """
local n = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then
  n = redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], KEYS[1])
end
return n
"""

_SWAP_REVISION = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return old
"""


def exact_key(scope: CacheScope, normalised_question: str) -> str:
    return EXACT.format(scope.digest(), question_digest(normalised_question))


class ExactTier:
    def __init__(self, client: redis.Redis, ttl_s: int, max_entries: int) -> None:
        self.redis = client
        self.ttl_s = int(ttl_s)
        self.max_entries = int(max_entries)
        self._claim = client.register_script(_CLAIM)
        self._forget = client.register_script(_FORGET)
        self._swap = client.register_script(_SWAP_REVISION)

    def get(self, scope: CacheScope, normalised_question: str) -> str | None:
        value = self.redis.get(exact_key(scope, normalised_question))
        return _text(value)

    def claim(self, scope: CacheScope, normalised_question: str, job_id: str) -> str | None:
        """SET NX: None when `job_id` now holds the key, else the job id that already held it."""
        holder = self._claim(
            keys=[exact_key(scope, normalised_question), MODEL_INDEX.format(scope.model)],
            args=[job_id, self.ttl_s, int(time.time()), self.max_entries],
        )
        return _text(holder)

    def forget(self, scope: CacheScope, normalised_question: str, job_id: str) -> int:
        """Drop the key if it still points to `job_id` (a newer claim is left alone)."""
        keys = [exact_key(scope, normalised_question), MODEL_INDEX.format(scope.model)]
        return int(self._forget(keys=keys, args=[job_id]))

    def clear(self, model: str | None = None) -> int:
        """Drop one model's keys, or every exact-tier key; returns how many existed."""
        dropped = 0
        if model is not None:
            index = MODEL_INDEX.format(model)
            members = self.redis.zrange(index, 0, -1)
            for start in range(0, len(members), 500):
                dropped += self.redis.delete(*members[start : start + 500])
            self.redis.delete(index)
            return dropped
        for pattern in (EXACT.format("*", "*"), MODEL_INDEX.format("*")):
            batch: list = []
            for key in self.redis.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    n = self.redis.delete(*batch)
                    dropped += n if pattern.startswith(CACHE_PREFIX + "x:") else 0
                    batch = []
            if batch:
                n = self.redis.delete(*batch)
                dropped += n if pattern.startswith(CACHE_PREFIX + "x:") else 0
        return dropped

    def swap_revision(self, model: str, revision: str) -> str | None:
        """Record `revision` as the model's current one; returns the one recorded before."""
        return _text(self._swap(keys=[CACHE_REVISIONS], args=[model, revision]))


def _text(value: object) -> str | None:
    if value is None or value is False:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)
