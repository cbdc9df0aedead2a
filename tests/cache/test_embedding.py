import numpy as np
import pytest

from vlmq.cache.embedding import DIM, EmbeddingNotReady, QuestionEmbedder


def test_unit_vectors_of_the_bundled_model(embedder):
    vec = embedder.embed("what color is the dog")
    assert vec.shape == (DIM,) and vec.dtype == np.float32
    assert abs(float(np.linalg.norm(vec)) - 1) < 1e-4
    # the facts the guard exists for: a near-miss is about as close as a paraphrase
    cat = embedder.embed("what color is the cat")
    para = embedder.embed("what is the color of the dog")
    assert float(vec @ cat) > 0.7 and float(vec @ para) > 0.85


def test_memo_encodes_once(embedder):
    before = embedder.encodes
    a = embedder.embed("a question asked twice in this test")
    b = embedder.embed("a question asked twice in this test")
    assert a is b and embedder.encodes == before + 1


def test_not_loaded_raises_not_ready():
    with pytest.raises(EmbeddingNotReady):
        QuestionEmbedder().embed("x")
