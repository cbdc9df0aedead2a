"""vlmq's answer cache: repeated image-question pairs answered at the API, in milliseconds.

Two tiers, one object (`AnswerCache`):

- exact (Redis, shared by every API replica): scope + normalised question -> job id, set NX so
  identical concurrent requests run once (`claim`);
- semantic (GPTCache with sqlite + faiss, per API process, persisted under
  `settings.cache_dir`): a paraphrase of a question already answered for the same scope, found
  with all-MiniLM-L6-v2 embeddings and let through only by `compatible` (guard.py), so "what
  color is the dog?" never answers "what color is the cat?".

A scope (`CacheScope`) is the model and its revision, the job type, every output-changing
parameter and the image's content hash: nothing is ever served across scopes.

Modules: scope (the key), normalize (the question text), guard (may a paraphrase match),
embedding (the model), exact (Redis tier), similarity (GPTCache evaluation), semantic (GPTCache
tier), answer_cache (both, never raising), calibration (precision/recall on labelled pairs).
"""

from vlmq.cache.answer_cache import SEMANTIC_JOB_TYPES, AnswerCache, CacheMatch
from vlmq.cache.guard import compatible, signature
from vlmq.cache.normalize import normalise
from vlmq.cache.scope import CacheScope

__all__ = [
    "SEMANTIC_JOB_TYPES", "AnswerCache", "CacheMatch", "CacheScope", "compatible", "normalise", "signature",
]
