import numpy as np

from tests.cache.conftest import new_scope
from vlmq.cache import CacheScope
from vlmq.cache.scope import SCOPE_DIM, scope_vector


def test_digest_is_stable_and_covers_every_field():
    base = CacheScope("m", "r", "vqa", '{"a":1}', "img")
    assert base.digest() == CacheScope("m", "r", "vqa", '{"a":1}', "img").digest()
    assert len(base.digest()) == 32
    others = [CacheScope("m2", "r", "vqa", '{"a":1}', "img"), CacheScope("m", "r2", "vqa", '{"a":1}', "img"),
              CacheScope("m", "r", "chat", '{"a":1}', "img"), CacheScope("m", "r", "vqa", '{"a":2}', "img"),
              CacheScope("m", "r", "vqa", '{"a":1}', "img2")]
    assert len({s.digest() for s in [base, *others]}) == 6


def test_fields_cannot_be_shifted_into_each_other():
    one, two = CacheScope("ab", "c", "vqa", "{}", "i"), CacheScope("a", "bc", "vqa", "{}", "i")
    assert one.digest() != two.digest()


def test_scope_vectors_are_unit_deterministic_and_nearly_orthogonal():
    digests = [new_scope().digest() for _ in range(400)]
    vecs = np.stack([scope_vector(d) for d in digests])
    assert vecs.shape == (400, SCOPE_DIM)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    assert np.array_equal(scope_vector(digests[0]), scope_vector(digests[0]))
    cos = vecs @ vecs.T
    np.fill_diagonal(cos, 0)
    assert cos.max() < 0.875  # the bound semantic.py's LAMBDA relies on
