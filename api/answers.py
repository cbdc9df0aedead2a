"""Answering a submit from the cache: hit, semantic hit, or joined to the same request in flight.

The scope of a request is its model, that model's weights revision (as its workers report it)
and cache generation (bumped by a clear), the job type, every parameter but the free text, and
the image's content key; the free text (question, prompt, single chat turn) is the cache's
question. A match points to the job that ran: succeeded, it is copied into a new job of the
caller (`hit`, `semantic_hit`); queued or running, an exact match joins it (`joined`: one model
run, the caller's own job id, settled by the worker when the run ends); failed or gone, the
entry is forgotten and the request runs. Sampled decoding without a seed is never cached.
A cache that is down or broken is a miss (the cache never raises).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from vlmq.api.services import Services
from vlmq.cache import SEMANTIC_JOB_TYPES, CacheScope
from vlmq.images import CheckedImage
from vlmq.jobs import CacheOutcome, JobRecord, JobStatus, now
from vlmq.jobtypes import Params
from vlmq.keyspace import GENERATION, REVISION


def split_question(params: Params) -> tuple[str | None, str]:
    """(the free text, canonical JSON of every other parameter)."""
    question, rest = params.split_question()
    return question, json.dumps(rest, sort_keys=True, separators=(",", ":"))


def cache_revision(services: Services, model: str) -> str | None:
    """The model's weights revision and cache generation; None before any worker reported one."""
    revision, generation = services.redis.mget(REVISION.format(model), GENERATION.format(model))
    if revision is None:
        return None
    return f"{revision.decode()}.g{int(generation or 0)}"


def bump_generation(services: Services, model: str) -> None:
    services.redis.incr(GENERATION.format(model))


@dataclass
class CachedRequest:
    services: Services
    scope: CacheScope
    question: str | None
    owner: str
    template: JobRecord  # the job as it would be created (id, timestamps and outcome replaced)

    @staticmethod
    def applies(services: Services, params: Params) -> bool:
        """The cache is on, and the request's output is deterministic (sampled decoding needs a seed)."""
        return services.cache is not None and not (params.sampled and params.seed is None)

    @classmethod
    def lookup(cls, services: Services, model: str, params: Params, image: CheckedImage, template: JobRecord
               ) -> tuple[CachedRequest | None, JobRecord | None]:
        """(the cached request, or None when the model's workers never reported a revision yet;
        its answer: a hit, a semantic hit or a joined job, or None: run it, the exact key is ours)."""
        cached = cls.of(services, model, params, image, template)
        return cached, (cached.answer() or cached.claim(template.id)) if cached is not None else None

    @property
    def remembers(self) -> bool:
        """Whether a miss is remembered for paraphrases (the semantic tier)."""
        return self.scope.job_type in SEMANTIC_JOB_TYPES

    @classmethod
    def of(cls, services: Services, model: str, params: Params, image: CheckedImage, template: JobRecord
           ) -> CachedRequest | None:
        cache = services.cache
        if cache is None or params.sampled and params.seed is None:
            return None
        revision = cache_revision(services, model)
        if revision is None:
            return None
        cache.check_revision(model, revision)
        question, rest = split_question(params)
        scope = CacheScope(model=model, revision=revision, job_type=str(params.type), params=rest,
                           image_key=image.key)
        return cls(services, scope, question, template.owner or "anonymous", template)

    # --- the two ways to answer without running ------------------------------------------------

    def answer(self) -> JobRecord | None:
        match = self.services.cache.lookup(self.scope, self.question)
        if match is None:
            return None
        tier = CacheOutcome.hit if match.tier == "hit" else CacheOutcome.semantic_hit
        return self._from(match.job_id, tier, may_join=tier is CacheOutcome.hit)

    def claim(self, job_id: str) -> JobRecord | None:
        """Single flight: take the exact key for `job_id`; if another job holds it, answer from it."""
        holder = self.services.cache.claim(self.scope, self.question, job_id)
        if holder is None or holder == job_id:
            return None
        return self._from(holder, CacheOutcome.hit, may_join=True)

    def remember(self, job_id: str) -> None:
        if self.remembers:
            self.services.cache.remember(self.scope, self.question, job_id)

    def forget(self, job_id: str) -> None:
        self.services.cache.forget(self.scope, self.question, job_id)

    # --- building the caller's job ---------------------------------------------------------------

    def _from(self, source_id: str, tier: CacheOutcome, may_join: bool) -> JobRecord | None:
        store = self.services.store
        source = store.get(source_id)
        if source is None or source.model != self.scope.model or source.status in (
            JobStatus.failed, JobStatus.canceled, JobStatus.aborted
        ):
            self.forget(source_id)
            return None
        if source.status is JobStatus.succeeded:
            return self._hit(source, tier)
        if not may_join:
            return None
        joiner = dataclasses.replace(self.template, created_at=now(), cache=CacheOutcome.joined,
                                     cached_from=source.id, image=None)
        store.create(joiner)
        if store.join(source.id, joiner.id) == "joined":
            self._count(CacheOutcome.joined)
            return joiner
        store.discard(joiner.id, joiner.owner)  # the source ended meanwhile: answer from it as it stands
        return self._from(source.id, tier, may_join=False)

    def _hit(self, source: JobRecord, tier: CacheOutcome) -> JobRecord:
        stamp = now()
        record = dataclasses.replace(
            self.template, status=JobStatus.succeeded, created_at=stamp, started_at=stamp,
            completed_at=stamp, output=source.output, cache=tier, cached_from=source.id, image=None,
        )
        self.services.store.create(record)
        self.services.notifier.final(record)
        self._count(tier)
        return record

    def _count(self, tier: CacheOutcome) -> None:
        pipe = self.services.redis.pipeline(transaction=False)
        self.services.metrics.inc("cache_answers", {"tier": tier.value}, pipe=pipe)
        labels = {"type": self.scope.job_type, "model": self.scope.model}
        self.services.metrics.inc("jobs_submitted", labels, pipe=pipe)  # finished: counted by the store
        pipe.execute()


