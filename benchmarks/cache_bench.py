"""Cache benchmark: lookup latency of both tiers, and semantic precision/recall on the labelled pairs.

    python benchmarks/cache_bench.py [--redis-url redis://127.0.0.1:6379/11] [--scopes 400]

In-process `AnswerCache` against a real Redis (its own keys only; removed at the end), the
semantic tier in a temporary folder, the real all-MiniLM-L6-v2. Semantic lookups compute their
embedding every time (the embedder's memo is emptied before each), as a new paraphrase would.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import redis

from vlmq.cache import AnswerCache, CacheScope
from vlmq.cache.calibration import (
    CALIBRATED_SIMILARITY,
    data_dir,
    evaluate_pairs,
    load_pairs,
    pairwise_decider,
    threshold_table,
    tier_decider,
)
from vlmq.cache.embedding import shared_embedder
from vlmq.cache.normalize import normalise
from vlmq.cache.scope import scope_vector
from vlmq.cache.semantic import LAMBDA, SemanticTier
from vlmq.settings import Settings

MODELS = ("bench-blip-vqa", "bench-vilt")
QUESTIONS = [
    "what color is the {o}?", "how many {p} are there?", "is there a {o}?", "where is the {o}?",
    "what is the {o} doing?", "what is next to the {o}?",
]
PLURALS = {"dog": "dogs", "cat": "cats", "car": "cars", "bus": "buses", "bird": "birds", "horse": "horses"}
OBJECTS = list(PLURALS)
PARAPHRASES = {  # an unseen wording of each template, that the tier should serve
    "what color is the {o}?": "What colour is the {o} in the picture?",
    "how many {p} are there?": "how many {p} can you see?",
    "is there a {o}?": "Is there a {o} in this image?",
    "where is the {o}?": "where's the {o} located?",
    "what is the {o} doing?": "What's the {o} doing in this photo?",
    "what is next to the {o}?": "what is beside the {o}?",
}
NEAR_MISSES = {  # same scope, close wording, must miss
    "what color is the {o}?": "what color is the {o}'s collar?",
    "how many {p} are there?": "how many {p} are not sitting?",
    "is there a {o}?": "is there no {o}?",
    "where is the {o}?": "why is the {o} there?",
    "what is the {o} doing?": "what is the {o} not doing?",
    "what is next to the {o}?": "what is behind the {o}?",
}


def pct(values: list[float]) -> str:
    ms = np.array(values) * 1000
    return (f"p50 {np.percentile(ms, 50):7.3f} ms   p99 {np.percentile(ms, 99):7.3f} ms   "
            f"mean {statistics.fmean(ms):7.3f} ms   (n={len(ms)})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--scopes", type=int, default=400, help="images x models populated")
    parser.add_argument("--lookups", type=int, default=2000, help="exact-tier lookups timed")
    parser.add_argument("--semantic-lookups", type=int, default=600)
    args = parser.parse_args()

    rng = random.Random(7)
    client = redis.Redis.from_url(args.redis_url)
    client.ping()
    folder = Path(tempfile.mkdtemp(prefix="vlmq-cache-bench-"))
    settings = Settings(redis_url=args.redis_url, data_dir=folder, cache_similarity=CALIBRATED_SIMILARITY,
                        cache_max_entries=100_000)
    print(f"load average {Path('/proc/loadavg').read_text().split()[:3]} on {os.cpu_count()} CPUs")
    print(f"redis {args.redis_url}   data {folder}   similarity {settings.cache_similarity}   "
          f"(Settings default {Settings.model_fields['cache_similarity'].default})")

    embedder = shared_embedder()
    started = time.perf_counter()
    embedder.load()
    print(f"embedding model loaded in {time.perf_counter() - started:.1f} s")
    cache = AnswerCache(settings, client, background_load=False, flush_interval_s=3600)
    try:
        for model in MODELS:
            cache.clear(model)

        # --- populate ---------------------------------------------------------------------------
        params = '{"max_new_tokens":10,"num_beams":1}'
        scopes = [CacheScope(MODELS[i % 2], "rev-1", "vqa", params, f"img-{i:05d}")
                  for i in range(args.scopes)]
        stored = [(s, q.format(o=o, p=PLURALS[o]))
                  for s in scopes for q in QUESTIONS for o in rng.sample(OBJECTS, 2)]
        embedder.prime([normalise(q) for _, q in stored])
        started = time.perf_counter()
        for n, (s, q) in enumerate(stored):
            cache.claim(s, q, f"job-{n}")
            cache.remember(s, q, f"job-{n}")
        took = time.perf_counter() - started
        print(f"populated {len(stored)} entries over {len(scopes)} scopes in {took:.1f} s "
              f"({took / len(stored) * 1000:.2f} ms per claim + remember)")

        # --- exact tier -----------------------------------------------------------------------------
        calls = embedder.calls
        times = []
        for _ in range(args.lookups):
            s, q = rng.choice(stored)
            asked = rng.choice([q, q.upper(), "  " + q.rstrip("?") + " "])
            t0 = time.perf_counter()
            match = cache.lookup(s, asked)
            times.append(time.perf_counter() - t0)
            assert match is not None and match.tier == "hit"
        assert embedder.calls == calls, "an exact hit computed an embedding"
        print(f"exact tier hit          {pct(times)}   embeddings computed: {embedder.calls - calls}")

        # --- semantic tier ----------------------------------------------------------------------
        def semantic(kind: dict[str, str], want_hit: bool, cold: bool = True) -> tuple[list[float], int]:
            out, right = [], 0
            templates = {q.format(o=o, p=PLURALS[o]): (q, o) for q in QUESTIONS for o in OBJECTS}
            for _ in range(args.semantic_lookups // 2):
                s, q = rng.choice(stored)
                template, obj = templates[q]
                asked = kind[template].format(o=obj, p=PLURALS[obj])
                if cold:
                    with embedder._memo_lock:
                        embedder._memo.clear()  # a new wording: its embedding is computed
                else:
                    embedder.embed(normalise(asked))
                t0 = time.perf_counter()
                match = cache.lookup(s, asked)
                out.append(time.perf_counter() - t0)
                right += (match is not None) == want_hit
            return out, right

        hits, right_hits = semantic(PARAPHRASES, True)
        misses, right_misses = semantic(NEAR_MISSES, False)
        print(f"semantic tier hit       {pct(hits)}   served: {right_hits}/{len(hits)}")
        print(f"semantic tier miss      {pct(misses)}   rejected: {right_misses}/{len(misses)}")
        print(f"semantic tier, all      {pct(hits + misses)}   (embedding included)")
        warm_hits, _ = semantic(PARAPHRASES, True, cold=False)
        warm_misses, _ = semantic(NEAR_MISSES, False, cold=False)
        print(f"  without the embedding {pct(warm_hits + warm_misses)}   (memoised: GPTCache search, "
              f"sqlite reads, evaluation)")
        with embedder._memo_lock:
            embedder._memo.clear()
        times = []
        for _ in range(200):
            t0 = time.perf_counter()
            embedder.embed(f"what color is the object number {rng.randrange(10**9)}")
            times.append(time.perf_counter() - t0)
        print(f"  of which the embedding {pct(times)}")

        # --- the scope vectors (LAMBDA) ---------------------------------------------------------
        vecs = np.stack([scope_vector(s.digest()) for s in scopes])
        cos = vecs @ vecs.T
        np.fill_diagonal(cos, -1)
        worst = float(cos.max())
        norm = 1 + LAMBDA**2
        print(f"scope separation: LAMBDA {LAMBDA}, {len(scopes)} scopes, "
              f"largest scope-vector cosine {worst:.3f} -> "
              f"cross-scope squared distance >= {LAMBDA**2 * (2 - 2 * worst) / norm:.3f} "
              f"> every same-scope distance <= {4 / norm:.3f}")
        print(f"semantic entries: {cache.stats().get('semantic_entries')}")
    finally:
        for model in MODELS:
            cache.clear(model)
        cache.close()

    # --- precision / recall on the labelled pairs ------------------------------------------------
    tune = load_pairs(data_dir() / "pairs_tune.jsonl")
    held = load_pairs(data_dir() / "pairs_heldout.jsonl")
    print(f"\nlabelled pairs (tests/cache/data), similarity {CALIBRATED_SIMILARITY}, guard on:")
    decide = pairwise_decider(embedder, CALIBRATED_SIMILARITY)
    for name, rows in (("tuning  ", tune), ("held-out", held), ("all     ", tune + held)):
        print("  pairwise   " + evaluate_pairs(rows, decide, name).line())
    tier_dir = Path(tempfile.mkdtemp(prefix="vlmq-cache-calib-"))
    tier = SemanticTier(tier_dir, embedder, ttl_s=3600, max_entries=10_000, similarity=CALIBRATED_SIMILARITY)
    tier.start(background=False)
    try:
        embedder.prime([normalise(r[k]) for r in tune + held for k in ("a", "b")])
        for name, rows in (("tuning  ", tune), ("held-out", held)):
            print("  GPTCache   " + evaluate_pairs(rows, tier_decider(tier), name).line())
    finally:
        tier.close()
        shutil.rmtree(tier_dir, ignore_errors=True)
    print("\nthreshold sweep on the tuning pairs (why a guard: no threshold alone separates them):")
    for t, with_guard, alone in threshold_table(tune, embedder):
        print(f"  similarity {t:.2f}:  +guard precision {with_guard.precision:.3f} "
              f"recall {with_guard.recall:.3f}"
              f"   |  threshold alone precision {alone.precision:.3f} recall {alone.recall:.3f}")
    shutil.rmtree(folder, ignore_errors=True)
    print(f"\nload average {Path('/proc/loadavg').read_text().split()[:3]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
