"""AnswerCache end to end: real Redis, real GPTCache, real all-MiniLM-L6-v2."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.cache.conftest import new_scope
from vlmq.cache import AnswerCache, CacheMatch
from vlmq.cache.embedding import QuestionEmbedder
from vlmq.settings import Settings


def remembered(cache: AnswerCache, scope, question: str, job_id: str) -> None:
    assert cache.claim(scope, question, job_id) is None
    cache.remember(scope, question, job_id)


def test_exact_hit_computes_no_embedding(make_cache, scope, embedder):
    cache = make_cache()
    remembered(cache, scope, "What color is the dog?", "job-1")
    calls = embedder.calls
    match = cache.lookup(scope, "  what COLOR is the dog ")
    assert match == CacheMatch("hit", "job-1", "what color is the dog", None)
    assert embedder.calls == calls


def test_semantic_hit_on_a_paraphrase(make_cache, scope):
    cache = make_cache()
    remembered(cache, scope, "what color is the dog?", "job-1")
    match = cache.lookup(scope, "What colour is the dog in the picture?")
    assert match is not None and match.tier == "semantic_hit" and match.job_id == "job-1"
    assert match.question == "what color is the dog"
    assert 0.8 <= match.similarity <= 1.0


@pytest.mark.parametrize(("stored", "asked"), [
    ("what color is the dog?", "what color is the cat?"),
    ("how many dogs are there?", "how many people are there?"),
    ("what is on the left of the car?", "what is on the right of the car?"),
    ("is there a dog?", "is there no dog?"),
    ("are there 3 dogs?", "are there 4 dogs?"),
    ("what is the man holding?", "what is the woman holding?"),
])
def test_near_misses_never_hit(make_cache, scope, stored, asked):
    cache = make_cache()
    remembered(cache, scope, stored, "job-1")
    assert cache.lookup(scope, asked) is None


def test_paraphrase_finds_its_own_question_among_near_misses(make_cache, scope):
    cache = make_cache()
    for i, q in enumerate(["what color is the cat?", "what color is the car?", "what color is the dog?",
                           "what breed is the dog?", "how many dogs are there?"]):
        remembered(cache, scope, q, f"job-{i}")
    match = cache.lookup(scope, "what colour is the dog in this image?")
    assert match is not None and match.job_id == "job-2"


@pytest.mark.parametrize("change", [
    {"image_key": "another-image"}, {"model": "another-model"}, {"revision": "rev-2"},
    {"params": '{"max_new_tokens":20,"num_beams":1}'}, {"job_type": "chat"},
])
def test_other_image_model_revision_params_or_type_miss(make_cache, scope, change):
    cache = make_cache()
    remembered(cache, scope, "what color is the dog?", "job-1")
    other = new_scope(**{**scope.__dict__, **change})
    assert cache.lookup(other, "what color is the dog?") is None
    assert cache.lookup(other, "what colour is the dog in the picture?") is None
    assert cache.lookup(scope, "what color is the dog?") is not None


def test_caption_and_detect_prompts_are_exact_only(make_cache):
    cache = make_cache()
    caption = new_scope(job_type="caption")
    remembered(cache, caption, "a photograph of", "job-1")
    assert cache.lookup(caption, "A photograph of").tier == "hit"
    assert cache.lookup(caption, "a photo of") is None
    assert cache.stats().get("remembered", 0) == 0


def test_question_none_is_keyed_too(make_cache):
    cache = make_cache()
    caption = new_scope(job_type="caption")
    assert cache.claim(caption, None, "job-1") is None
    assert cache.lookup(caption, None) == CacheMatch("hit", "job-1", None, None)
    assert cache.lookup(caption, "a picture of") is None


def test_claim_is_single_flight(make_cache, scope):
    cache = make_cache()
    assert cache.claim(scope, "what is this?", "job-1") is None
    assert cache.claim(scope, "What is this", "job-2") == "job-1"
    results = []
    barrier = threading.Barrier(8)
    other = new_scope()

    def run(i):
        barrier.wait()
        results.append(cache.claim(other, "what is this", f"job-{i}"))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert results.count(None) == 1


def test_forget_drops_both_tiers(make_cache, scope):
    cache = make_cache()
    remembered(cache, scope, "what color is the dog?", "job-1")
    cache.forget(scope, "what color is the dog?", "job-1")
    assert cache.lookup(scope, "what color is the dog?") is None
    assert cache.lookup(scope, "what colour is the dog in the picture?") is None
    assert cache.claim(scope, "what color is the dog?", "job-2") is None


def test_forget_leaves_a_newer_claim(make_cache, scope):
    cache = make_cache()
    remembered(cache, scope, "what is this", "job-1")
    cache.forget(scope, "what is this", "job-1")
    remembered(cache, scope, "what is this", "job-2")
    cache.forget(scope, "what is this", "job-1")
    assert cache.lookup(scope, "what is this").job_id == "job-2"


def test_survives_a_restart(make_cache, tmp_path, scope):
    first = make_cache(tmp_path)
    remembered(first, scope, "how many people are in the image?", "job-1")
    first.close()
    second = make_cache(tmp_path)
    match = second.lookup(scope, "How many persons are in the picture?")
    assert match is not None and match.tier == "semantic_hit" and match.job_id == "job-1"


def test_eviction_past_max_entries(make_cache, scope):
    cache = make_cache(cache_max_entries=10)
    objects = ["dogs", "cats", "cars", "buses", "people", "birds", "trees", "boats", "chairs", "cups",
               "plates", "bikes", "kites", "horses", "cows"]
    for i, obj in enumerate(objects):
        remembered(cache, scope, f"how many {obj} are there?", f"job-{i}")
    assert cache.stats()["semantic_entries"] <= 10
    assert cache.lookup(scope, "what is the number of dogs?") is None  # the oldest went
    assert cache.lookup(scope, "what is the number of cows?").job_id == "job-14"


def test_ttl_expiry(make_cache, scope):
    cache = make_cache(cache_ttl_s=1)
    remembered(cache, scope, "what color is the dog?", "job-1")
    assert cache.lookup(scope, "what colour is the dog in the picture?") is not None
    time.sleep(1.3)
    assert cache.lookup(scope, "what color is the dog?") is None
    assert cache.lookup(scope, "what colour is the dog in the picture?") is None
    assert cache.stats()["semantic_entries"] == 0


def test_clear_per_model_and_all(make_cache):
    cache = make_cache()
    a, b = new_scope(model="clear-a"), new_scope(model="clear-b")
    remembered(cache, a, "what color is the dog?", "job-a")
    remembered(cache, b, "what color is the dog?", "job-b")
    paraphrase = "what colour is the dog in the picture?"
    assert cache.lookup(a, paraphrase).job_id == "job-a"
    assert cache.clear("clear-a") == 2  # one exact key, one semantic entry
    assert cache.lookup(a, "what color is the dog?") is None
    assert cache.lookup(a, paraphrase) is None
    assert cache.lookup(b, "what color is the dog?").job_id == "job-b"
    assert cache.lookup(b, paraphrase).job_id == "job-b"
    assert cache.clear() >= 2
    assert cache.lookup(b, "what color is the dog?") is None
    assert cache.lookup(b, paraphrase) is None


def test_check_revision_drops_the_models_entries(make_cache):
    cache = make_cache()
    model = f"rev-model-{time.time_ns()}"
    old, other = new_scope(model=model, revision="r1"), new_scope(model="rev-other")
    assert cache.check_revision(model, "r1") is False
    remembered(cache, old, "what color is the dog?", "job-1")
    remembered(cache, other, "what color is the dog?", "job-2")
    assert cache.check_revision(model, "r1") is False
    assert cache.check_revision(model, "r2") is True
    assert cache.lookup(old, "what color is the dog?") is None
    assert cache.lookup(old, "what colour is the dog in the picture?") is None
    assert cache.lookup(other, "what color is the dog?").job_id == "job-2"
    assert cache.check_revision(model, "r2") is False


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_redis_down_is_a_miss_never_an_exception(make_cache, scope):
    # no retries: redis-py 8's default policy would spend ~4.5 s per call before giving up
    down = redis.Redis(host="127.0.0.1", port=_closed_port(), socket_connect_timeout=0.5,
                       retry=Retry(NoBackoff(), 0))
    cache = make_cache(client_=down)
    assert cache.lookup(scope, "what color is the dog?") is None
    assert cache.claim(scope, "what color is the dog?", "job-1") is None
    cache.remember(scope, "what color is the dog?", "job-1")
    cache.forget(scope, "what color is the dog?", "job-1")
    assert cache.check_revision("m", "r") is False
    cache.clear("m")
    stats = cache.stats()
    assert stats["errors"] >= 5 and stats["errors:exact.lookup"] == 1


def test_gptcache_failing_at_run_time_is_a_miss(make_cache, scope, monkeypatch):
    cache = make_cache()
    remembered(cache, scope, "what color is the dog?", "job-1")

    def broken(*_a, **_k):
        raise RuntimeError("faiss exploded")

    monkeypatch.setattr(cache._semantic._gpt.data_manager, "search", broken)
    monkeypatch.setattr(cache._semantic._gpt, "import_data", broken)
    assert cache.lookup(scope, "what colour is the dog in the picture?") is None
    cache.remember(scope, "what is this?", "job-2")
    assert cache.lookup(scope, "what color is the dog?").tier == "hit"  # the exact tier still works
    assert cache.stats()["errors:semantic.lookup"] == 1
    assert cache.stats()["errors:semantic.remember"] == 1


def test_corrupt_store_is_moved_aside(make_cache, tmp_path, scope):
    folder = tmp_path / "cache" / "semantic"
    folder.mkdir(parents=True)
    (folder / "sqlite.db").write_bytes(b"this is not a database" * 100)
    (folder / "faiss.index").write_bytes(b"\x00garbage" * 100)
    cache = make_cache(tmp_path)
    assert cache.ready
    remembered(cache, scope, "what color is the dog?", "job-1")
    assert cache.lookup(scope, "what colour is the dog in the picture?").job_id == "job-1"
    assert any(p.name.startswith("sqlite.db.corrupt-") for p in folder.iterdir())


def test_unusable_cache_dir_leaves_the_exact_tier(make_cache, tmp_path, scope):
    (tmp_path / "cache").write_text("a file where the folder should be")
    cache = make_cache(tmp_path)
    assert not cache.ready
    remembered(cache, scope, "what color is the dog?", "job-1")
    assert cache.lookup(scope, "what color is the dog?").tier == "hit"
    assert cache.lookup(scope, "what colour is the dog in the picture?") is None
    assert cache.stats()["errors:semantic.start"] == 1


class _NeverLoads(QuestionEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def load(self) -> None:
        self.release.wait(30)
        raise RuntimeError("not in this test")


def test_semantic_lookups_miss_until_the_model_is_loaded(redis_url, client, tmp_path, scope):
    stub = _NeverLoads()
    cache = AnswerCache(Settings(redis_url=redis_url, data_dir=tmp_path), client, embedder=stub)
    try:
        assert not cache.ready
        remembered(cache, scope, "what color is the dog?", "job-1")
        assert cache.lookup(scope, "what color is the dog?").tier == "hit"
        assert cache.lookup(scope, "what colour is the dog in the picture?") is None
        assert cache.stats()["not_ready"] == 1
    finally:
        stub.release.set()
        cache.close()


def test_disabled_cache_does_nothing(make_cache, scope):
    cache = make_cache(cache_enabled=False)
    assert cache.claim(scope, "q", "job-1") is None
    assert cache.lookup(scope, "q") is None
    assert not cache.ready


def test_semantic_off_keeps_the_exact_tier(make_cache, scope, embedder):
    cache = make_cache(cache_semantic=False)
    remembered(cache, scope, "what color is the dog?", "job-1")
    assert cache.lookup(scope, "what color is the dog?").tier == "hit"
    assert cache.lookup(scope, "what colour is the dog in the picture?") is None


def test_background_start_becomes_ready(redis_url, client, tmp_path, scope, embedder):
    settings = Settings(redis_url=redis_url, data_dir=tmp_path, cache_similarity=0.8)
    cache = AnswerCache(settings, client)  # background_load=True: the API's way
    try:
        assert cache.lookup(scope, "what color is the dog?") is None  # never blocks, ready or not
        assert cache.wait_ready(30)
        remembered(cache, scope, "what color is the dog?", "job-1")
        assert cache.lookup(scope, "what colour is the dog in the picture?").job_id == "job-1"
    finally:
        cache.close()


def test_long_prompts_are_exact_only(make_cache, embedder):
    cache = make_cache()
    chat = new_scope(job_type="chat")
    prompt = "Describe this image in great detail, " + "mentioning every object you can see and its colour, " * 8
    remembered(cache, chat, prompt, "job-1")
    calls = embedder.calls
    assert cache.lookup(chat, prompt).tier == "hit"
    assert cache.lookup(chat, prompt + " please") is None
    assert embedder.calls == calls
