"""The cache through the service: hit latency at the API, worker runs saved on a realistic stream.

    python benchmarks/cache_service.py [--stream 1000] [--redis-db 10]

Real processes (the API with GPTCache and the real MiniLM embedding, one ViLT worker), real HTTP,
one client. Latencies are the client's round trip of `POST /v1/jobs` (so they include HTTP, JSON,
the image's decoding and hashing, and the cache): an upper bound of the time spent in the cache.
The worker's own counter (its batch-size histogram's sum: jobs it ran) shows what the model did.

1. exact hits: the same (image, question) again, differently spaced and cased;
2. semantic hits: the paraphrase of each labelled pair that must hit (tests/cache/data), after its
   other half was answered;
3. a stream of requests over a fixed set of images and questions, where users ask popular
   questions more often (a Zipf law over question templates, some worded several ways): hit rate
   by tier, and the model runs it saved.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from skimage import data as photos

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.stack import Stack

MODEL = "vilt-vqa"
PAIRS = Path(__file__).resolve().parents[1] / "tests" / "cache" / "data"
#: question templates of the stream, each with its wordings (paraphrases the guard accepts)
TEMPLATES = [
    ["what is in the picture?", "what is in the image?", "what is in this photo?"],
    ["how many people are in the image?", "how many people are there in the picture?"],
    ["what color is the shirt?", "what is the color of the shirt?", "what colour is the shirt?"],
    ["is there a dog?", "is there a dog in the picture?"],
    ["what is the man holding?", "what is the man holding in this photo?"],
    ["where is this?", "where was this photo taken?"],
    ["what is on the table?", "what is on the table in the image?"],
    ["is it daytime?", "is it daytime in the picture?"],
    ["what animal is this?"],
    ["what is the woman wearing?", "what is the woman wearing in this photo?"],
    ["how many cars are there?", "how many cars are in the picture?"],
    ["what is the weather like?"],
]


def _uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _images(n: int) -> list[str]:
    base = [photos.astronaut(), photos.chelsea(), photos.coffee(), photos.rocket(), photos.cat()]
    out = []
    for i in range(n):
        img = Image.fromarray(base[i % len(base)]).resize((160 + i, 120 + i))
        out.append(_uri(img))
    return out


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _post(client: httpx.Client, body: dict) -> tuple[dict, float]:
    began = time.perf_counter()
    response = client.post("/v1/jobs", json=body)
    elapsed = (time.perf_counter() - began) * 1000
    response.raise_for_status()
    return response.json(), elapsed


def _wait(client: httpx.Client, job_id: str) -> dict:
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "canceled", "aborted"):
            return job
        time.sleep(0.02)


def _semantic_ready(client: httpx.Client, image: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        n += 1
        first, _ = _post(client, {"type": "vqa", "model": MODEL, "image_url": image, "question": f"what is thing {n}?"})
        _wait(client, first["id"])
        probe, _ = _post(client, {"type": "vqa", "model": MODEL, "image_url": image,
                                  "question": f"what is thing {n} in the picture?"})
        if probe["cache"] == "semantic_hit":
            return
        time.sleep(0.5)
    raise SystemExit("the semantic tier never became ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", type=int, default=1000)
    parser.add_argument("--redis-db", type=int, default=10)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    images = _images(40)

    with Stack([MODEL], args.redis_db) as stack, httpx.Client(base_url=stack.url, timeout=60) as client:
        _semantic_ready(client, images[-1])
        print(f"# vlmq cache through the service ({MODEL}; API {stack.url})\n")

        # 1. exact hits
        primed = []
        for i in range(20):
            job, _ = _post(client, {"type": "vqa", "model": MODEL, "image_url": images[i], "question": "What is it?"})
            primed.append(_wait(client, job["id"]))
        runs_before = stack.worker_runs(MODEL)
        exact = []
        for n in range(300):
            job, ms = _post(client, {"type": "vqa", "model": MODEL, "image_url": images[n % 20],
                                     "question": "  what IS it "})
            assert job["cache"] == "hit", job
            exact.append(ms)
        exact_runs = stack.worker_runs(MODEL) - runs_before

        # 2. semantic hits: the labelled paraphrase pairs
        pairs = [json.loads(line) for f in sorted(PAIRS.glob("pairs_*.jsonl")) for line in f.read_text().splitlines()]
        same = [p for p in pairs if p["same"]][:120]
        for i, pair in enumerate(same):
            job, _ = _post(client, {"type": "vqa", "model": MODEL, "image_url": images[20 + i % 19], "question": pair["a"]})
        _wait(client, job["id"])
        time.sleep(1)
        runs_before = stack.worker_runs(MODEL)
        semantic, outcomes = [], Counter()
        for i, pair in enumerate(same):
            job, ms = _post(client, {"type": "vqa", "model": MODEL, "image_url": images[20 + i % 19],
                                     "question": pair["b"]})
            outcomes[job["cache"]] += 1
            if job["cache"] == "semantic_hit":
                semantic.append(ms)
            elif job["cache"] == "miss":
                _wait(client, job["id"])
        semantic_runs = stack.worker_runs(MODEL) - runs_before

        # 3. a realistic stream
        stack.redis.delete("vlmq:metrics:cache_answers")
        weights = [1 / (rank + 1) for rank in range(len(TEMPLATES))]
        stream_images = images[:25]
        runs_before = stack.worker_runs(MODEL)
        tiers, ids = Counter(), []
        began = time.perf_counter()
        for _ in range(args.stream):
            template = rng.choices(TEMPLATES, weights)[0]
            image = rng.choice(stream_images)
            job, _ = _post(client, {"type": "vqa", "model": MODEL, "image_url": image, "question": rng.choice(template)})
            tiers[job["cache"]] += 1
            ids.append(job["id"])
        for job_id in ids[-50:]:
            _wait(client, job_id)
        stream_s = time.perf_counter() - began
        time.sleep(1)
        stream_runs = stack.worker_runs(MODEL) - runs_before

    n = args.stream
    answered = tiers["hit"] + tiers["semantic_hit"] + tiers["joined"]
    print("| what | n | p50 ms | p99 ms | worker runs |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| exact hit (POST round trip) | {len(exact)} | {statistics.median(exact):.2f} | {_pct(exact, 99):.2f} | {exact_runs} |")
    print(f"| semantic hit (POST round trip) | {len(semantic)} | {statistics.median(semantic):.2f} | "
          f"{_pct(semantic, 99):.2f} | {semantic_runs} (the {outcomes['miss']} misses) |")
    print(f"\nlabelled paraphrases asked: {len(same)}; answered {dict(outcomes)}\n")
    print(f"stream of {n} requests over {len(stream_images)} images and {len(TEMPLATES)} question templates "
          f"(Zipf popularity, {sum(len(t) for t in TEMPLATES)} wordings), one client, {stream_s:.1f} s:")
    print(f"- answered by tier: {dict(tiers)}")
    print(f"- hit rate {answered / n:.1%} (exact {tiers['hit'] / n:.1%}, semantic {tiers['semantic_hit'] / n:.1%}, "
          f"joined {tiers['joined'] / n:.1%})")
    print(f"- model runs: {stream_runs} for {n} requests: {n - stream_runs} runs saved ({(n - stream_runs) / n:.1%})")


if __name__ == "__main__":
    main()
