"""The OpenAI-compatible surface against vlmq's own API, side by side in one run on one stack:

1. Chat-completions round trip: `POST /openai/v1/chat/completions` (no stream) against the native
   `POST /v1/jobs` with `Prefer: wait`, the same caption job on the tiny demo BLIP (a new seed per
   request, so no answer comes from the cache), interleaved; p50 and p90 per request and the ratio.
2. Batch ingest: a 50,000-line JSONL file through `POST /openai/v1/files` + `POST /openai/v1/batches`
   until every line is queued, against the same 50,000 jobs through the native `POST /v1/batches`
   (1,000 per request); lines per second for both, and the API process's peak RSS while it ingests
   (the file must not sit in its memory). The model has no worker and room for every job, so this
   measures intake alone.

    python benchmarks/openai_surface.py [--requests 60] [--lines 50000]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from typing import Self

from benchmarks.stack import Stack
from vlmq.keyspace import OAI_BATCH

SINK = "blip-sink"  # no worker: jobs wait, so intake alone is measured


def _image_uri(side: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (120, 80, 200)).save(buffer, "JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _chat_body(model: str, image: str, seed: int) -> dict:
    return {"model": model, "max_tokens": 8, "seed": seed,
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}}]}]}


def _native_body(model: str, image: str, seed: int) -> dict:
    return {"type": "caption", "model": model, "image_url": image, "max_new_tokens": 8, "seed": seed}


def round_trips(url: str, requests: int) -> dict:
    image = _image_uri(64)
    native, openai = [], []
    with httpx.Client(base_url=url, timeout=120) as client:
        for seed in range(3):  # warm both paths
            client.post("/v1/jobs", json=_native_body("blip-base", image, 10_000 + seed), headers={"Prefer": "wait=60"})
            client.post("/openai/v1/chat/completions", json=_chat_body("blip-base", image, 20_000 + seed))
        for i in range(requests):
            began = time.perf_counter()
            answer = client.post("/v1/jobs", json=_native_body("blip-base", image, 2 * i), headers={"Prefer": "wait=60"})
            native.append(time.perf_counter() - began)
            assert answer.status_code == 200 and answer.json()["status"] == "succeeded", answer.text
            began = time.perf_counter()
            answer = client.post("/openai/v1/chat/completions", json=_chat_body("blip-base", image, 2 * i + 1))
            openai.append(time.perf_counter() - began)
            assert answer.status_code == 200, answer.text

    def summary(times: list[float]) -> dict:
        ordered = sorted(times)
        return {"p50_ms": round(statistics.median(ordered) * 1000, 1),
                "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1000, 1)}

    result = {"requests": requests, "native": summary(native), "openai": summary(openai)}
    result["ratio_p50"] = round(result["openai"]["p50_ms"] / result["native"]["p50_ms"], 3)
    return result


class PeakRss:
    def __init__(self, proc) -> None:
        self.proc, self.peak, self._stop = proc, 0.0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.proc.rss_mib() or 0.0)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.thread.join()


def ingest(stack: Stack, lines: int) -> dict:
    image = _image_uri(32)
    url = stack.url
    with httpx.Client(base_url=url, timeout=600) as client:
        began = time.perf_counter()
        for start in range(0, lines, 1000):
            jobs = [_native_body(SINK, image, start + i) for i in range(min(1000, lines - start))]
            answer = client.post("/v1/batches", json={"jobs": jobs})
            assert answer.status_code == 202 and answer.json()["accepted"] == len(jobs), answer.text[:500]
        native_s = time.perf_counter() - began
        stack.redis.flushdb()  # the same empty lane for the second run

        with tempfile.TemporaryFile() as file:
            for i in range(lines):
                file.write((json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                                        "body": _chat_body(SINK, image, 100_000 + i)}) + "\n").encode())
            size = file.tell()
            file.seek(0)
            rss_before = stack.api.rss_mib() or 0.0
            with PeakRss(stack.api) as rss:
                began = time.perf_counter()
                uploaded = client.post("/openai/v1/files", files={"file": ("input.jsonl", file)}, data={"purpose": "batch"})
                assert uploaded.status_code == 200, uploaded.text
                upload_s = time.perf_counter() - began
                batch = client.post("/openai/v1/batches", json={"input_file_id": uploaded.json()["id"],
                                                                 "endpoint": "/v1/chat/completions",
                                                                 "completion_window": "24h"}).json()
                while int(stack.redis.hget(OAI_BATCH.format(batch["id"]), "line") or 0) < lines:
                    time.sleep(0.2)
                openai_s = time.perf_counter() - began
        final = client.get(f"/openai/v1/batches/{batch['id']}").json()
        assert final["request_counts"]["total"] == lines and final["request_counts"]["failed"] == 0, final
    return {"lines": lines, "file_mib": round(size / 2**20, 1), "native_s": round(native_s, 1),
            "native_per_s": round(lines / native_s), "openai_upload_s": round(upload_s, 1),
            "openai_s": round(openai_s, 1), "openai_per_s": round(lines / openai_s),
            "ratio": round(native_s / openai_s, 3), "api_rss_before_mib": round(rss_before),
            "api_rss_peak_mib": round(rss.peak)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--redis-db", type=int, default=10)
    args = parser.parse_args()
    models = {SINK: {"adapter": "blip_caption", "source": "demo:blip-base", "tasks": ["caption"],
                     "queue_limit": args.lines + 10}}
    env = {"VLMQ_MODELS": json.dumps(models), "VLMQ_AUTH_MODE": "open"}
    with Stack(models=["blip-base"], redis_db=args.redis_db, env=env) as stack:
        trips = round_trips(stack.url, args.requests)
        print(json.dumps({"round_trip": trips}), flush=True)
        intake = ingest(stack, args.lines)
        print(json.dumps({"ingest": intake}), flush=True)
        stack.redis.flushdb()
    print("\n| Measure | native API | OpenAI surface | ratio |\n| --- | --- | --- | --- |")
    print(f"| chat round trip p50 (tiny BLIP, {trips['requests']} each) | {trips['native']['p50_ms']} ms | "
          f"{trips['openai']['p50_ms']} ms | {trips['ratio_p50']}x (target <= 1.2x) |")
    print(f"| chat round trip p90 | {trips['native']['p90_ms']} ms | {trips['openai']['p90_ms']} ms | |")
    print(f"| intake of {intake['lines']:,} jobs ({intake['file_mib']} MiB JSONL) | {intake['native_per_s']:,}/s "
          f"(/v1/batches x1000) | {intake['openai_per_s']:,}/s (upload {intake['openai_upload_s']} s included) | "
          f"{intake['ratio']}x (target >= 1x) |")
    print(f"| API RSS while ingesting | | {intake['api_rss_before_mib']} -> {intake['api_rss_peak_mib']} MiB | |")


if __name__ == "__main__":
    main()
