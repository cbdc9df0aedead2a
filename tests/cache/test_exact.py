"""The Redis tier alone: keys, single flight, per-model index, bounds, revisions."""

import threading
import time

import pytest

from tests.cache.conftest import new_scope
from vlmq.cache.exact import ExactTier, exact_key
from vlmq.keyspace import MODEL_INDEX


@pytest.fixture
def tier(client) -> ExactTier:
    return ExactTier(client, ttl_s=60, max_entries=10)


def test_claim_get_and_key_layout(tier, client):
    scope = new_scope(model="exact-a")
    assert tier.get(scope, "what is this") is None
    assert tier.claim(scope, "what is this", "job-1") is None
    assert tier.get(scope, "what is this") == "job-1"
    key = exact_key(scope, "what is this")
    assert key.startswith(f"vlmq:cache:x:{scope.digest()}:")
    assert 55 <= client.ttl(key) <= 60
    assert client.zscore(MODEL_INDEX.format("exact-a"), key) is not None


def test_second_claim_returns_the_holder_and_same_job_is_idempotent(tier):
    scope = new_scope()
    assert tier.claim(scope, "q", "job-1") is None
    assert tier.claim(scope, "q", "job-2") == "job-1"
    assert tier.claim(scope, "q", "job-1") is None


def test_concurrent_claims_start_one_job(tier):
    scope = new_scope()
    results: list[str | None] = []
    barrier = threading.Barrier(16)

    def run(i: int) -> None:
        barrier.wait()
        results.append(tier.claim(scope, "same question", f"job-{i}"))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(None) == 1
    winner = tier.get(scope, "same question")
    assert all(r == winner for r in results if r is not None)


def test_forget_only_drops_its_own_job(tier):
    scope = new_scope()
    tier.claim(scope, "q", "job-1")
    assert tier.forget(scope, "q", "job-other") == 0
    assert tier.get(scope, "q") == "job-1"
    assert tier.forget(scope, "q", "job-1") == 1
    assert tier.get(scope, "q") is None
    assert tier.claim(scope, "q", "job-2") is None


def test_past_max_entries_the_oldest_keys_go(tier, client):
    scopes = [new_scope(model="exact-bounded") for _ in range(13)]
    for i, scope in enumerate(scopes):
        tier.claim(scope, "q", f"job-{i}")
        time.sleep(0.002)
    assert client.zcard(MODEL_INDEX.format("exact-bounded")) == 10
    alive = [tier.get(s, "q") for s in scopes]
    assert alive.count(None) == 3


def test_clear_model(tier):
    a, b = new_scope(model="exact-clear-a"), new_scope(model="exact-clear-b")
    tier.claim(a, "q1", "j1")
    tier.claim(a, "q2", "j2")
    tier.claim(b, "q1", "j3")
    assert tier.clear("exact-clear-a") == 2
    assert tier.get(a, "q1") is None and tier.get(a, "q2") is None
    assert tier.get(b, "q1") == "j3"


def test_swap_revision(tier):
    assert tier.swap_revision("exact-rev", "r1") is None
    assert tier.swap_revision("exact-rev", "r1") == "r1"
    assert tier.swap_revision("exact-rev", "r2") == "r1"
