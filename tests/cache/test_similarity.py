from datetime import datetime, timedelta
from types import SimpleNamespace

import numpy as np

from vlmq.cache.similarity import ScopedEvaluation, entry_text, parse_entry, question_cosine


def vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(448).astype(np.float32)
    return v


def cache_dict(question: str, emb: np.ndarray, age_s: float = 0.0, row_id: int = 7) -> dict:
    data = SimpleNamespace(create_on=datetime.now() - timedelta(seconds=age_s))
    return {"question": question, "embedding": emb, "cache_data": data, "search_result": (0.1, row_id)}


def test_entry_round_trip():
    text = entry_text("d" * 32, "what is this", "model\x1fodd")
    entry = parse_entry(text)
    assert (entry.digest, entry.question, entry.model) == ("d" * 32, "what is this", "model\x1fodd")
    assert parse_entry("no separators") is None


def test_rank_is_question_cosine_when_scope_ttl_and_guard_agree():
    ev = ScopedEvaluation(ttl_s=60)
    a, b = vec(1), vec(1) * 2
    src = {"question": entry_text("s1", "what color is the dog", "m"), "embedding": a}
    rank = ev.evaluation(src, cache_dict(entry_text("s1", "what colour is the dog", "m"), b))
    assert abs(rank - 1.0) < 1e-5
    assert ev.range() == (0.0, 1.0)


def test_zero_for_other_scope_incompatible_question_or_expired():
    expired: list[int] = []
    ev = ScopedEvaluation(ttl_s=60, on_expired=expired.append)
    a = vec(1)
    src = {"question": entry_text("s1", "what color is the dog", "m"), "embedding": a}
    assert ev.evaluation(src, cache_dict(entry_text("s2", "what color is the dog", "m"), a)) == 0
    assert ev.evaluation(src, cache_dict(entry_text("s1", "what color is the cat", "m"), a)) == 0
    old = cache_dict(entry_text("s1", "what color is the dog", "m"), a, age_s=61, row_id=9)
    assert ev.evaluation(src, old) == 0
    assert expired == [9]


def test_question_cosine_ignores_the_scope_part():
    a = np.concatenate([np.ones(384), np.zeros(64)])
    b = np.concatenate([np.ones(384), np.ones(64) * 5])
    assert abs(question_cosine(a, b) - 1) < 1e-6
