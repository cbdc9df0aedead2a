"""The GPTCache tier alone: one shared faiss index, scopes kept apart, files, bounds."""

from __future__ import annotations

import numpy as np
import pytest

from tests.cache.conftest import new_scope
from vlmq.cache.calibration import CALIBRATED_SIMILARITY
from vlmq.cache.semantic import LAMBDA, VECTOR_DIM, SemanticTier, max_distance, tier_vector


def open_tier(folder, embedder, **kw) -> SemanticTier:
    params = {"ttl_s": 3600, "max_entries": 1000, "similarity": CALIBRATED_SIMILARITY, **kw}
    tier = SemanticTier(folder, embedder, **params)
    tier.start(background=False)
    return tier


@pytest.fixture
def tier(tmp_path, embedder):
    t = open_tier(tmp_path / "semantic", embedder)
    yield t
    t.close()


def test_gptcache_is_the_engine(tier):
    from gptcache import Cache
    from gptcache.manager.data_manager import SSDataManager
    from gptcache.manager.vector_data.faiss import Faiss

    assert isinstance(tier._gpt, Cache)
    assert isinstance(tier._gpt.data_manager, SSDataManager)
    assert isinstance(tier._gpt.data_manager.v, Faiss)
    assert tier._gpt.config.similarity_threshold == CALIBRATED_SIMILARITY


def test_same_scope_neighbours_come_before_any_other_scope(tier, embedder):
    """The worst case: 150 other scopes hold the very same questions (question distance 0)."""
    questions = ["what color is the dog", "how many people are there", "what is the man holding",
                 "is there a cat", "what is on the table"]
    scopes = [new_scope() for _ in range(150)]
    for s in scopes:
        for q in questions:
            tier.put(s.digest(), s.model, q, f"{s.image_key}:{q}")
    index = tier._gpt.data_manager.v._index
    own = scopes[7]
    query = tier_vector(embedder.embed("what colour is the dog in the picture"), own.digest())
    query = (query / np.linalg.norm(query)).reshape(1, -1)
    dist, ids = index.search(query, 20)
    answers = [tier._gpt.data_manager.s.get_data_by_id(int(i)).answers[0].answer for i in ids[0]]
    same = [a.startswith(own.image_key) for a in answers]
    assert same[:5] == [True] * 5 and not any(same[5:])
    assert dist[0][4] < dist[0][5]
    # and every same-scope entry that can match is within the distance the search keeps
    assert dist[0][0] <= max_distance(CALIBRATED_SIMILARITY) < dist[0][5]
    hit = tier.lookup(own.digest(), own.model, "what colour is the dog in the picture")
    assert hit is not None and hit.job_id == f"{own.image_key}:what color is the dog"


def test_vector_layout():
    vec = tier_vector(np.ones(384, dtype=np.float32) / np.sqrt(384), "ab" * 16)
    assert vec.shape == (VECTOR_DIM,)
    assert abs(np.linalg.norm(vec[384:]) - LAMBDA) < 1e-4


def test_faiss_index_is_rebuilt_from_sqlite(tmp_path, embedder):
    folder = tmp_path / "semantic"
    scope = new_scope()
    first = open_tier(folder, embedder)
    first.put(scope.digest(), scope.model, "what color is the dog", "job-1")
    first.close()
    (folder / "faiss.index").unlink()  # as if the process died before writing it
    second = open_tier(folder, embedder)
    try:
        hit = second.lookup(scope.digest(), scope.model, "what colour is the dog in the picture")
        assert hit is not None and hit.job_id == "job-1"
        assert second._gpt.data_manager.v.count() == 1
    finally:
        second.close()


def test_second_process_on_the_folder_gets_a_private_tier(tier, tmp_path, embedder):
    scope = new_scope()
    tier.put(scope.digest(), scope.model, "what color is the dog", "job-1")
    other = open_tier(tmp_path / "semantic", embedder)
    try:
        assert other.ready and other._ephemeral
        assert other.lookup(scope.digest(), scope.model, "what color is the dog") is None
        other.put(scope.digest(), scope.model, "what color is the cat", "job-2")
        assert other.lookup(scope.digest(), scope.model, "what color is the cat").job_id == "job-2"
    finally:
        temp = other._dir
        other.close()
    assert not temp.exists()


def test_layout_change_starts_empty(tmp_path, embedder):
    folder = tmp_path / "semantic"
    scope = new_scope()
    first = open_tier(folder, embedder)
    first.put(scope.digest(), scope.model, "what color is the dog", "job-1")
    first.close()
    (folder / "meta.json").write_text('{"format": 0}')
    second = open_tier(folder, embedder)
    try:
        assert second.count() == 0
        assert second.lookup(scope.digest(), scope.model, "what color is the dog") is None
    finally:
        second.close()


def test_periodic_flush_and_ttl_sweep(tmp_path, embedder):
    import time

    folder = tmp_path / "semantic"
    tier = open_tier(folder, embedder, ttl_s=1, flush_interval_s=0.2)
    try:
        scope = new_scope()
        tier.put(scope.digest(), scope.model, "what color is the dog", "job-1")
        time.sleep(0.6)
        assert (folder / "faiss.index").exists()  # written without a close
        time.sleep(1.0)
        assert tier.count() == 0  # swept after its TTL, not only skipped
    finally:
        tier.close()


def test_clear_many_entries_in_chunks(tmp_path, embedder):
    tier = open_tier(tmp_path / "semantic", embedder, max_entries=5000)
    try:
        for _ in range(240):
            s = new_scope()
            for q in ("what color is the dog", "is there a cat", "how many people are there",
                      "what is the man holding", "where is the ball"):
                tier.put(s.digest(), s.model, q, "job")
        assert tier.count() == 1200
        assert tier.clear() == 1200
        assert tier.count() == 0 and tier._gpt.data_manager.v.count() == 0
    finally:
        tier.close()


def test_sqlite_indexes_exist(tier, tmp_path):
    import sqlite3

    with sqlite3.connect(tmp_path / "semantic" / "sqlite.db") as conn:
        names = {r[0] for r in conn.execute("select name from sqlite_master where type = 'index'")}
    assert {"vlmq_answer_question", "vlmq_answer_job", "vlmq_question_created"} <= names
