"""The answer cache end to end: real GPTCache and embedding in the API, real Redis, real workers."""

from __future__ import annotations

import time

import httpx
import pytest
import redis

from tests.conftest import REVISION_MODEL
from tests.utils.images import astronaut, cat, coffee, data_uri
from tests.utils.jobs import run, submit, wait
from tests.utils.processes import start_api, start_worker, wait_ready
from tests.utils.slow_model import SLOW_MODEL


@pytest.fixture(scope="module")
def api(stack) -> httpx.Client:
    with stack.client() as client:
        _wait_semantic_ready(client)
        yield client


def _wait_semantic_ready(client: httpx.Client, timeout: float = 60) -> None:
    """The API loads the embedding in the background: until then paraphrases are misses."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        picture = coffee().resize((40, 40))
        stamp = time.time_ns()
        picture.putpixel((0, 0), (stamp % 256, stamp // 256 % 256, stamp // 65536 % 256))
        image = data_uri(picture)  # a new scope each try
        first = run(client, {"type": "vqa", "model": "vilt-vqa", "image_url": image, "question": "what is on the plate?"})
        probe = submit(client, {"type": "vqa", "model": "vilt-vqa", "image_url": image,
                                "question": "what is on the plate in this picture?"}).json()
        if probe["cache"] == "semantic_hit" and probe["cached_from"] == first["id"]:
            return
        time.sleep(0.5)
    raise AssertionError("the semantic tier never became ready")


def _finished(stack, model: str) -> float:
    """Jobs the model's workers ran (the workers' batch-size histogram: its sum)."""
    raw = redis.Redis.from_url(stack.redis_url).hget("vlmq:metrics:batch_size", f"model={model}|sum")
    return float(raw or 0)


def _vqa(image: str, question: str, **extra) -> dict:
    return {"type": "vqa", "model": "vilt-vqa", "image_url": image, "question": question, **extra}


def test_exact_hit_answers_at_the_api_without_a_worker(api: httpx.Client, stack) -> None:
    image = data_uri(cat())
    first = run(api, _vqa(image, "What is the man holding?"))
    worker_runs = _finished(stack, "vilt-vqa")
    again = api.post("/v1/jobs", json=_vqa(image, "  what is the man   holding "))
    assert again.status_code == 200, again.text
    hit = again.json()
    assert hit["status"] == "succeeded" and hit["cache"] == "hit" and hit["cached_from"] == first["id"]
    assert hit["id"] != first["id"] and hit["output"] == first["output"]
    time.sleep(0.5)
    assert _finished(stack, "vilt-vqa") == worker_runs  # no worker touched
    assert api.get(f"/v1/jobs/{hit['id']}").json()["cache"] == "hit"


def test_semantic_hit_and_near_misses(api: httpx.Client) -> None:
    image = data_uri(astronaut())
    first = run(api, _vqa(image, "how many people are in the image?"))
    para = submit(api, _vqa(image, "how many people are there in the picture?")).json()
    assert para["cache"] == "semantic_hit" and para["cached_from"] == first["id"], para
    assert para["output"] == first["output"]
    for near_miss in ("how many dogs are in the image?", "how many people are not in the image?",
                      "how many people are on the left in the image?", "how many 3 people are in the image?"):
        job = submit(api, _vqa(image, near_miss)).json()
        assert job["cache"] == "miss", (near_miss, job)
        wait(api, job["id"])


def test_other_image_model_or_parameters_never_hit(api: httpx.Client) -> None:
    image = data_uri(coffee())
    run(api, _vqa(image, "what is in the cup?"))
    assert submit(api, _vqa(data_uri(cat()), "what is in the cup?")).json()["cache"] == "miss"
    assert submit(api, _vqa(image, "what is in the cup?", top_k=3)).json()["cache"] == "miss"
    blip = submit(api, {**_vqa(image, "what is in the cup?"), "model": "blip-vqa"}).json()
    assert blip["cache"] == "miss"
    wait(api, blip["id"])


def test_single_flight_joins_the_running_job(api: httpx.Client, stack) -> None:
    body = {"type": "caption", "model": SLOW_MODEL, "image_url": data_uri(cat().rotate(3)), "max_new_tokens": 40}
    before = _finished(stack, SLOW_MODEL)
    first = submit(api, body).json()
    second = submit(api, body).json()
    assert first["cache"] == "miss" and second["cache"] == "joined" and second["cached_from"] == first["id"]
    a, b = wait(api, first["id"]), wait(api, second["id"])
    assert a["status"] == b["status"] == "succeeded" and a["output"] == b["output"]
    time.sleep(0.5)
    assert _finished(stack, SLOW_MODEL) - before == 1  # one model run for both
    events = [e for e in api.get(f"/v1/jobs/{second['id']}/events").text.splitlines() if e.startswith("event:")]
    assert events[-1] == "event: succeeded"


def test_opt_out_sampling_and_failures_are_not_cached(api: httpx.Client) -> None:
    image = data_uri(cat().rotate(7))
    run(api, _vqa(image, "is it a cat?"))
    off = submit(api, _vqa(image, "is it a cat?", cache=False)).json()
    assert off["cache"] == "off"
    wait(api, off["id"])
    sampled = {"type": "caption", "model": "blip-base", "image_url": image, "decoding": {"strategy": "nucleus", "top_p": 0.9}}
    assert run(api, sampled)["cache"] == "off"
    seeded = {**sampled, "seed": 3}
    first = run(api, seeded)
    assert first["cache"] == "miss" and submit(api, seeded).json()["cache"] == "hit"
    failing = {"type": "detect", "model": "faces", "image_url": image, "prompt": "detect dog"}
    assert run(api, failing)["status"] == "failed"
    again = submit(api, failing).json()
    assert again["cache"] == "miss"  # a failed job is never an answer
    assert wait(api, again["id"])["status"] == "failed"


def test_detect_hit_serves_the_annotated_image_under_its_own_id(api: httpx.Client) -> None:
    body = {"type": "detect", "model": "faces", "image_url": data_uri(astronaut()), "prompt": "detect face"}
    first = run(api, body)
    hit = submit(api, body).json()
    url = hit["output"]["artifacts"]["annotated.png"]
    assert hit["cache"] == "hit" and url == f"/v1/jobs/{hit['id']}/artifacts/annotated.png"
    assert api.get(url).content == api.get(first["output"]["artifacts"]["annotated.png"]).content


def test_admin_clear_drops_a_models_answers(api: httpx.Client) -> None:
    image = data_uri(coffee().rotate(5))
    run(api, _vqa(image, "what is this?"))
    assert submit(api, _vqa(image, "what is this?")).json()["cache"] == "hit"
    cleared = api.post("/v1/admin/cache/clear", json={"model": "vilt-vqa"})
    assert cleared.status_code == 200 and cleared.json()["models"] == ["vilt-vqa"]
    job = submit(api, _vqa(image, "what is this?")).json()
    assert job["cache"] == "miss"
    wait(api, job["id"])
    assert api.post("/v1/admin/cache/clear", json={"model": "nope"}).status_code == 422


def test_new_weights_revision_drops_cached_answers(stack, base_env, log_dir, data_dir) -> None:
    worker = start_worker(REVISION_MODEL, base_env, log_dir)
    try:
        wait_ready(stack.redis_url, [worker], [REVISION_MODEL])
        with stack.client() as api:
            body = {"type": "vqa", "model": REVISION_MODEL, "image_url": data_uri(cat()), "question": "what animal?"}
            run(api, body)
            assert submit(api, body).json()["cache"] == "hit"
            worker.stop()
            config = data_dir / "revision-model" / "config.json"
            config.write_text(config.read_text())  # new weights: a new fingerprint
            worker = start_worker(REVISION_MODEL, base_env, log_dir)
            wait_ready(stack.redis_url, [worker], [REVISION_MODEL])
            after = submit(api, body).json()
            assert after["cache"] == "miss"
            assert wait(api, after["id"])["status"] == "succeeded"
    finally:
        worker.stop()


def test_cache_survives_an_api_restart(stack, base_env, log_dir, tmp_path) -> None:
    # its own data dir: the session API holds the semantic tier of the shared one
    env = {**base_env, "VLMQ_DATA_DIR": str(tmp_path)}
    image = data_uri(astronaut().rotate(2))
    proc, url = start_api(env, log_dir)
    try:
        with httpx.Client(base_url=url, timeout=30) as api:
            _wait_semantic_ready(api)
            first = run(api, _vqa(image, "what is the woman wearing?"))
        proc.stop()  # graceful: the semantic tier is written to disk
        proc, url = start_api(env, log_dir)
        with httpx.Client(base_url=url, timeout=30) as api:
            _wait_semantic_ready(api)
            exact = submit(api, _vqa(image, "what is the woman wearing?")).json()
            para = submit(api, _vqa(image, "what is the woman wearing in this photo?")).json()
        assert exact["cache"] == "hit" and para["cache"] == "semantic_hit"
        assert exact["cached_from"] == para["cached_from"] == first["id"]
    finally:
        proc.stop()
