"""`AnswerCache`: the API's one object for the cache, both tiers behind five calls.

    match = cache.lookup(scope, question)          # exact tier, then semantic tier
    if match: ...serve (or join) match.job_id...
    holder = cache.claim(scope, question, job_id)  # single flight: SET NX on the exact key
    if holder: ...join holder instead of enqueuing...
    else: ...enqueue job_id...; cache.remember(scope, question, job_id)
    # the job a match points to failed or expired:
    cache.forget(scope, question, match.job_id)

Nothing here raises to the caller: a tier that is down or broken is a miss (claim: "you got
it"), logged and counted in `stats()`. The exact tier works from the first call; the semantic
tier once its store is open and its embedding model loaded (`ready`), a background thread's work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis

from vlmq.cache.exact import ExactTier
from vlmq.cache.guard import signature
from vlmq.cache.normalize import normalise
from vlmq.cache.scope import CacheScope
from vlmq.jobtypes import SEMANTIC
from vlmq.settings import Settings

if TYPE_CHECKING:  # imported when the semantic tier is on: a service with it off needs no GPTCache, MiniLM
    from vlmq.cache.embedding import QuestionEmbedder
    from vlmq.cache.semantic import SemanticTier

log = logging.getLogger(__name__)

#: Job types whose free text may be answered from a paraphrase (their modules say `semantic=True`).
#: A caption prompt is a prefix the model continues (its output starts with it) and a detect prompt
#: is a label list: both are served from the exact tier only.
SEMANTIC_JOB_TYPES = SEMANTIC

_ERROR_LOG_EVERY_S = 30.0


@dataclass(frozen=True)
class CacheMatch:
    tier: str  # "hit" (exact) | "semantic_hit"
    job_id: str
    question: str | None  # the stored question that matched (normalised)
    similarity: float | None  # cosine of the question embeddings (semantic hits)


class AnswerCache:
    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        *,
        background_load: bool = True,
        embedder: QuestionEmbedder | None = None,
        flush_interval_s: float = 30.0,
    ) -> None:
        self.settings = settings
        self.enabled = settings.cache_enabled
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self._last_error_log: dict[str, float] = {}
        self._revisions: dict[str, str] = {}
        self._exact = ExactTier(client, settings.cache_ttl_s, settings.cache_max_entries)
        self._semantic: SemanticTier | None = None
        if self.enabled and settings.cache_semantic:
            from vlmq.cache.embedding import shared_embedder
            from vlmq.cache.semantic import SemanticTier

            self._semantic = SemanticTier(
                settings.cache_dir / "semantic",
                embedder or shared_embedder(),
                ttl_s=settings.cache_ttl_s,
                max_entries=settings.cache_max_entries,
                similarity=settings.cache_similarity,
                flush_interval_s=flush_interval_s,
            )
            try:
                self._semantic.start(background=background_load)
            except Exception as exc:  # noqa: BLE001 - a broken cache is a miss, never an error
                self._failed("semantic.start", exc)

    # --- state -------------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """The semantic tier is usable (store open, embedding loaded)."""
        return self._semantic is not None and self._semantic.ready

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._semantic is not None and self._semantic.wait_ready(timeout)

    def stats(self) -> dict[str, int]:
        """Counters since start: lookups, hit, semantic_hit, miss, not_ready, claims, joined,
        remembered, forgotten, errors and errors:<operation>."""
        with self._counts_lock:
            out = dict(self._counts)
        if self._semantic is not None:
            try:
                out["semantic_entries"] = self._semantic.count()
            except Exception as exc:  # noqa: BLE001 - a broken cache is a miss, never an error
                self._failed("semantic.count", exc)
        return out

    # --- the interface ----------------------------------------------------------------------------

    def lookup(self, scope: CacheScope, question: str | None) -> CacheMatch | None:
        """Exact tier first (no embedding), then the semantic tier (a paraphrase). Never raises."""
        if not self.enabled:
            return None
        self._count("lookups")
        norm = normalise(question)
        try:
            job_id = self._exact.get(scope, norm)
        except Exception as exc:  # noqa: BLE001 - a broken cache is a miss, never an error
            self._failed("exact.lookup", exc)
            job_id = None
        if job_id:
            self._count("hit")
            return CacheMatch("hit", job_id, norm if question is not None else None, None)
        if self._semantic_applies(scope, norm):
            if not self._semantic.ready:
                self._count("not_ready")
            else:
                try:
                    found = self._semantic.lookup(scope.digest(), scope.model, norm)
                except Exception as exc:  # noqa: BLE001 - a broken cache is a miss, never an error
                    self._failed("semantic.lookup", exc)
                    found = None
                if found is not None:
                    self._count("semantic_hit")
                    return CacheMatch("semantic_hit", found.job_id, found.question, found.similarity)
        self._count("miss")
        return None

    def claim(self, scope: CacheScope, question: str | None, job_id: str) -> str | None:
        """Exact-tier SET NX: the job id already holding the key (join it), or None (ours now)."""
        if not self.enabled:
            return None
        self._count("claims")
        try:
            holder = self._exact.claim(scope, normalise(question), job_id)
        except Exception as exc:  # noqa: BLE001 - a broken cache is a miss, never an error
            self._failed("exact.claim", exc)
            return None
        if holder:
            self._count("joined")
        return holder

    def remember(self, scope: CacheScope, question: str | None, job_id: str) -> None:
        """Add the question to the semantic tier (after the API enqueued a miss)."""
        if not self.enabled:
            return
        norm = normalise(question)
        if not self._semantic_applies(scope, norm) or not self._semantic.ready:
            return
        try:
            if self._semantic.put(scope.digest(), scope.model, norm, job_id):
                self._count("remembered")
        except Exception as exc:  # noqa: BLE001 - a broken cache is a miss, never an error
            self._failed("semantic.remember", exc)

    def forget(self, scope: CacheScope, question: str | None, job_id: str) -> None:
        """Drop the exact key if it still points to `job_id`, and semantic entries pointing to it."""
        dropped = 0
        try:
            dropped += self._exact.forget(scope, normalise(question), job_id)
        except Exception as exc:  # noqa: BLE001 - a broken cache is a miss, never an error
            self._failed("exact.forget", exc)
        if self._semantic is not None:
            try:
                dropped += self._semantic.forget(job_id)
            except Exception as exc:  # noqa: BLE001 - a broken cache is a miss, never an error
                self._failed("semantic.forget", exc)
        self._count("forgotten", dropped)

    def clear(self, model: str | None = None) -> int:
        """Drop one model's entries (both tiers), or everything; returns how many were dropped."""
        dropped = 0
        try:
            dropped += self._exact.clear(model)
        except Exception as exc:  # noqa: BLE001 - a broken cache is a miss, never an error
            self._failed("exact.clear", exc)
        if self._semantic is not None:
            try:
                dropped += self._semantic.clear(model)
            except Exception as exc:  # noqa: BLE001 - a broken cache is a miss, never an error
                self._failed("semantic.clear", exc)
        if model is None:
            self._revisions.clear()
        log.info("cache: cleared %d entries (%s)", dropped, f"model {model}" if model else "all models")
        return dropped

    def check_revision(self, model: str, revision: str) -> bool:
        """Record the model's weights revision; when it changed, drop the model's entries (True).

        The last revision is kept in Redis (for the exact tier, shared by replicas) and next to the
        semantic store (this process's tier). Cheap when nothing changed: one dict lookup.
        """
        if self._revisions.get(model) == revision:
            return False
        changed = False
        try:
            before = self._exact.swap_revision(model, revision)
            if before is not None and before != revision:
                dropped = self._exact.clear(model)
                log.info("cache: %s changed revision %s -> %s; dropped %d exact entries",
                         model, before, revision, dropped)
                changed = True
        except Exception as exc:  # noqa: BLE001 - a broken cache is a miss, never an error
            self._failed("exact.check_revision", exc)
            return False
        if self._semantic is not None:
            try:
                changed = self._semantic.check_revision(model, revision) or changed
            except Exception as exc:  # noqa: BLE001 - a broken cache is a miss, never an error
                self._failed("semantic.check_revision", exc)
                return changed
        self._revisions[model] = revision
        return changed

    def close(self) -> None:
        """Persist the semantic tier and stop its threads (safe to call twice)."""
        if self._semantic is not None:
            try:
                self._semantic.close()
            except Exception as exc:  # noqa: BLE001 - a broken cache is a miss, never an error
                self._failed("semantic.close", exc)

    # --- internals ----------------------------------------------------------------------------

    def _semantic_applies(self, scope: CacheScope, norm: str) -> bool:
        """A question the guard cannot reduce (empty, very long) can never match a paraphrase:
        it is neither embedded nor stored."""
        return (bool(norm) and self._semantic is not None and scope.job_type in SEMANTIC_JOB_TYPES
                and signature(norm) is not None)

    def _count(self, name: str, amount: int = 1) -> None:
        with self._counts_lock:
            self._counts[name] += amount

    def _failed(self, op: str, exc: BaseException) -> None:
        with self._counts_lock:
            self._counts["errors"] += 1
            self._counts[f"errors:{op}"] += 1
            now = time.monotonic()
            loud = now - self._last_error_log.get(op, -1e9) >= _ERROR_LOG_EVERY_S
            if loud:
                self._last_error_log[op] = now
        if loud:
            log.warning("cache: %s failed (served as a miss): %s: %s", op, type(exc).__name__, exc,
                        exc_info=not isinstance(exc, redis.ConnectionError))
