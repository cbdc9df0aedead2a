"""The semantic tier's GPTCache `SimilarityEvaluation`: same scope, close enough, and compatible.

GPTCache hands each nearest neighbour to `ScopedEvaluation.evaluation` and keeps it when the
returned rank reaches `Config.similarity_threshold` (the range is 0..1). The rank is the cosine
of the two question embeddings (the 384 question dimensions only), or 0 when any rule says no:

1. the stored entry's scope digest equals the request's (the scope part of the vector keeps
   other scopes far away, but the text decides);
2. the entry is younger than the TTL (an older one is reported through `on_expired` and dropped);
3. `compatible(request question, stored question)`: the guard (guard.py).

Entries are stored in GPTCache's question column as ``{scope digest}\\x1f{normalised question}
\\x1f{model}`` (`entry_text`); the answer column holds the job id.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from gptcache.similarity_evaluation import SimilarityEvaluation

from vlmq.cache.embedding import DIM
from vlmq.cache.guard import compatible

SEP = "\x1f"


@dataclass(frozen=True)
class Entry:
    digest: str
    question: str
    model: str


def entry_text(digest: str, normalised_question: str, model: str) -> str:
    return f"{digest}{SEP}{normalised_question}{SEP}{model}"


def parse_entry(text: Any) -> Entry | None:
    if not isinstance(text, str):
        text = getattr(text, "content", None)
        if not isinstance(text, str):
            return None
    digest, sep, rest = text.partition(SEP)
    question, sep2, model = rest.partition(SEP)
    if not sep or not sep2:
        return None
    return Entry(digest, question, model)


def question_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the question parts (first DIM dimensions) of two tier vectors."""
    qa = np.asarray(a, dtype=np.float32)[:DIM]
    qb = np.asarray(b, dtype=np.float32)[:DIM]
    na, nb = float(np.linalg.norm(qa)), float(np.linalg.norm(qb))
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(qa, qb) / (na * nb))


class ScopedEvaluation(SimilarityEvaluation):
    def __init__(self, ttl_s: float, on_expired: Callable[[int], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.ttl_s = float(ttl_s)
        self.on_expired = on_expired
        self.clock = clock

    def evaluation(self, src_dict: dict[str, Any], cache_dict: dict[str, Any], **_: Any) -> float:
        src = parse_entry(src_dict.get("question"))
        hit = parse_entry(cache_dict.get("question"))
        if src is None or hit is None or src.digest != hit.digest:
            return 0.0
        cache_data = cache_dict.get("cache_data")
        created = getattr(cache_data, "create_on", None)
        if isinstance(created, datetime) and created.timestamp() < self.clock() - self.ttl_s:
            search = cache_dict.get("search_result")
            if self.on_expired is not None and search is not None:
                self.on_expired(int(search[1]))
            return 0.0
        src_vec, hit_vec = src_dict.get("embedding"), cache_dict.get("embedding")
        if src_vec is None or hit_vec is None:
            return 0.0
        if not compatible(src.question, hit.question):
            return 0.0
        return max(0.0, min(1.0, question_cosine(src_vec, hit_vec)))

    def range(self) -> tuple[float, float]:
        return 0.0, 1.0
