"""What a cached answer is valid for: `CacheScope` and the vector that keeps scopes apart.

A scope is everything but the question that decides an output: the model and its weights
revision, the job type, every output-changing parameter (canonical JSON, built by the API,
including the seed of a sampled request) and the image's content hash. Two requests share a
cache entry only when their scopes are equal and their questions match.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

#: Dimensions of the scope part of a semantic-tier vector (see `scope_vector`).
SCOPE_DIM = 64


@dataclass(frozen=True)
class CacheScope:
    model: str
    revision: str
    job_type: str
    params: str  # canonical JSON of the params minus the free text (the API builds it)
    image_key: str

    def digest(self) -> str:
        """32 hex characters (128 bits of sha256) naming this scope; stable across processes."""
        return _digest(self)


@lru_cache(maxsize=4096)
def _digest(scope: CacheScope) -> str:
    canonical = json.dumps(asdict(scope), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


@lru_cache(maxsize=4096)
def scope_vector(digest: str, dim: int = SCOPE_DIM) -> np.ndarray:
    """A unit vector drawn deterministically from the scope digest (seeded Gaussian).

    Two different scopes' vectors are nearly orthogonal (cosine ~ N(0, 1/dim)); the semantic tier
    appends this vector, scaled, to each question embedding so that in one shared index every
    same-scope neighbour is nearer than any other scope's entry (see semantic.py).
    """
    rng = np.random.default_rng(int(digest[:16], 16))
    vec = rng.standard_normal(dim).astype(np.float64)
    vec /= np.linalg.norm(vec)
    out = vec.astype(np.float32)
    out.setflags(write=False)
    return out
