"""Measure the semantic tier on labelled question pairs: precision, recall, and what went wrong.

The pairs (JSONL: ``{"a": ..., "b": ..., "same": true|false, "kind": ...}``) live in
tests/cache/data/: `pairs_tune.jsonl` (the guard and the threshold were tuned on it) and
`pairs_heldout.jsonl` (a stratified quarter set aside before any tuning, never tuned on).
A pair is a hit when the answer stored for `a` is served for `b`.

Two ways to decide a pair, one report:

- `pairwise_decider(embedder, similarity)`: cosine >= similarity and `compatible(a, b)`, the
  rule the tier applies (fast: one batch of embeddings);
- `tier_decider(tier)`: end to end through a real `SemanticTier` (GPTCache, faiss, sqlite): `a`
  is stored under a scope of its own, `b` looked up in the same scope.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vlmq.cache.embedding import QuestionEmbedder
from vlmq.cache.guard import compatible
from vlmq.cache.normalize import normalise

#: The `cache_similarity` the labelled tuning set supports (see `threshold_table`): the guard
#: decides precision; below 0.80 recall gains little (3 of 168 tuning pairs) for a thinner margin.
CALIBRATED_SIMILARITY = 0.80

Decider = Callable[[list[dict]], list[bool]]


@dataclass
class Report:
    name: str
    pairs: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    false_hits: list[dict] = field(default_factory=list)
    misses: list[dict] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    def line(self) -> str:
        return (f"{self.name}: {self.pairs} pairs ({self.tp + self.fn} paraphrases, "
                f"{self.fp + self.tn} near-misses)"
                f"  precision {self.precision:.3f}  recall {self.recall:.3f}"
                f"  (tp {self.tp}, fp {self.fp}, fn {self.fn}, tn {self.tn})")


def data_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "tests" / "cache" / "data"


def load_pairs(*paths: str | Path) -> list[dict]:
    """Pairs from JSONL files (default: every pairs_*.jsonl in tests/cache/data)."""
    files = [Path(p) for p in paths] or sorted(data_dir().glob("pairs_*.jsonl"))
    rows: list[dict] = []
    for path in files:
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows.append({"a": row["a"], "b": row["b"], "same": bool(row["same"]),
                             "kind": row.get("kind", "")})
    return rows


def evaluate_pairs(pairs: list[dict], decide: Decider, name: str = "pairs") -> Report:
    report = Report(name, pairs=len(pairs))
    for pair, hit in zip(pairs, decide(pairs), strict=True):
        if pair["same"] and hit:
            report.tp += 1
        elif pair["same"]:
            report.fn += 1
            report.misses.append(pair)
        elif hit:
            report.fp += 1
            report.false_hits.append(pair)
        else:
            report.tn += 1
    return report


def pair_cosines(pairs: list[dict], embedder: QuestionEmbedder) -> np.ndarray:
    a = embedder.embed_many([normalise(p["a"]) for p in pairs])
    b = embedder.embed_many([normalise(p["b"]) for p in pairs])
    return (a * b).sum(axis=1)


def pairwise_decider(embedder: QuestionEmbedder, similarity: float) -> Decider:
    def decide(pairs: list[dict]) -> list[bool]:
        cos = pair_cosines(pairs, embedder)
        return [bool(c >= similarity) and compatible(p["a"], p["b"]) for c, p in zip(cos, pairs, strict=True)]

    return decide


def tier_decider(tier) -> Decider:  # tier: vlmq.cache.semantic.SemanticTier (ready)
    def decide(pairs: list[dict]) -> list[bool]:
        out = []
        for i, pair in enumerate(pairs):
            digest = hashlib.sha256(f"calibration:{i}:{pair['a']}".encode()).hexdigest()[:32]
            tier.put(digest, "calibration", normalise(pair["a"]), f"job-{i}")
            hit = tier.lookup(digest, "calibration", normalise(pair["b"]))
            out.append(hit is not None and hit.job_id == f"job-{i}")
        return out

    return decide


THRESHOLDS = (0.6, 0.7, 0.75, 0.8, 0.85, 0.9)


def threshold_table(
    pairs: list[dict], embedder: QuestionEmbedder, thresholds: Iterable[float] = THRESHOLDS
) -> list[tuple[float, Report, Report]]:
    """For each threshold: (threshold, report with the guard, report of the threshold alone)."""
    cos = pair_cosines(pairs, embedder)
    guard = [compatible(p["a"], p["b"]) for p in pairs]
    rows = []
    for t in thresholds:
        near = [bool(c >= t) for c in cos]
        both = [n and g for n, g in zip(near, guard, strict=True)]
        with_guard = evaluate_pairs(pairs, lambda _, both=both: both, f"t={t} +guard")
        alone = evaluate_pairs(pairs, lambda _, near=near: near, f"t={t} alone")
        rows.append((t, with_guard, alone))
    return rows
