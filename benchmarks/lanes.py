"""Interactive before bulk, and fair share between keys, measured with real workers.

    python benchmarks/lanes.py [--backlog 2000] [--heavy 5000] [--light 20] [--redis-db 10]

A tiny model, so queueing dominates. Times are the job records' own (server side): created_at,
started_at, completed_at.

1. With `--backlog` bulk jobs queued for one worker, interactive jobs are submitted one at a time
   while the worker works through the backlog: their time to start (started_at - created_at),
   p50 and p99, against one batch's run time.
2. Key A queues `--heavy` bulk jobs, then key B submits `--light` (both while no worker runs, then
   one starts): when B's last job finishes, the share of A's jobs already finished (target: B done
   before A has run a tenth of its jobs).
"""

from __future__ import annotations

import argparse
import base64
import io
import statistics
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from skimage import data as photos

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.stack import Stack
from vlmq.keys import KeyStore

MODEL = "blip-base"


def _uri() -> str:
    buffer = io.BytesIO()
    Image.fromarray(photos.chelsea()).resize((64, 48)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _job(image: str) -> dict:
    return {"type": "caption", "model": MODEL, "image_url": image, "max_new_tokens": 8, "cache": False}


def _bulk(client: httpx.Client, image: str, count: int) -> list[str]:
    ids = []
    while count > 0:
        size = min(500, count)
        reply = client.post("/v1/batches", json={"jobs": [_job(image)] * size})
        reply.raise_for_status()
        ids += [j["id"] for j in reply.json()["jobs"]]
        count -= size
    return ids


def _records(stack: Stack, ids: list[str]) -> list[dict[str, float]]:
    pipe = stack.redis.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(f"vlmq:job:{job_id}", "created_at", "started_at", "completed_at", "status")
    out = []
    for created, started, completed, status in pipe.execute():
        out.append({"created": float(created), "started": float(started or "nan"),
                    "completed": float(completed or "nan"), "status": (status or b"").decode()})
    return out


def _wait_all(stack: Stack, ids: list[str], timeout: float = 1800) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pipe = stack.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(f"vlmq:job:{job_id}", "status")
        if all(s in (b"succeeded", b"failed", b"canceled", b"aborted") for s in pipe.execute()):
            return
        time.sleep(0.5)
    raise SystemExit("jobs did not finish in time")


def _batch_seconds(stack: Stack) -> float:
    raw = stack.redis.hmget("vlmq:metrics:batch_seconds", f"model={MODEL}|sum", f"model={MODEL}|count")
    return float(raw[0]) / float(raw[1]) if raw[1] else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=2000)
    parser.add_argument("--probes", type=int, default=60)
    parser.add_argument("--heavy", type=int, default=5000)
    parser.add_argument("--light", type=int, default=20)
    parser.add_argument("--redis-db", type=int, default=10)
    args = parser.parse_args()
    image = _uri()
    big = {"VLMQ_MODELS": '{"blip-base": {"queue_limit": 100000}}', "VLMQ_CACHE_ENABLED": "false"}

    with Stack([MODEL], args.redis_db, env=big) as stack, httpx.Client(base_url=stack.url, timeout=120) as client:
        print(f"# vlmq lanes ({MODEL}, one worker, max_batch_size 8; API {stack.url})\n")
        # 1. interactive jobs while a bulk backlog drains
        backlog = _bulk(client, image, args.backlog)
        probes = []
        for _ in range(args.probes):
            probes.append(client.post("/v1/jobs", json=_job(image)).json()["id"])
            time.sleep(0.05)
        left = sum(1 for r in _records(stack, backlog) if r["status"] == "queued")
        _wait_all(stack, probes + backlog)
        starts = [(r["started"] - r["created"]) * 1000 for r in _records(stack, probes)]
        batch_ms = _batch_seconds(stack) * 1000
        print(f"1. {args.probes} interactive jobs submitted while {args.backlog} bulk jobs were queued "
              f"({left} still queued after the last probe):")
        print(f"   time to start p50 {statistics.median(starts):.1f} ms, p99 {np.percentile(starts, 99):.1f} ms, "
              f"max {max(starts):.1f} ms; one batch runs {batch_ms:.1f} ms on average "
              f"(target: at most one batch + 50 ms = {batch_ms + 50:.1f} ms)\n")

        # 2. fair share between two keys: both backlogs queued while no worker runs, then one starts
        stack.stop_workers()
        keys = KeyStore(stack.redis)
        heavy, _ = keys.create("A", rate=1000, burst=1000)
        light, _ = keys.create("B", rate=1000, burst=1000)
        client.headers["Authorization"] = f"Bearer {heavy}"
        a_ids = _bulk(client, image, args.heavy)
        client.headers["Authorization"] = f"Bearer {light}"
        b_ids = _bulk(client, image, args.light)
        stack.start_workers()
        _wait_all(stack, a_ids + b_ids)
        a_done = sorted(r["completed"] for r in _records(stack, a_ids))
        b_records = _records(stack, b_ids)
        b_last = max(r["completed"] for r in b_records)
        share = sum(1 for t in a_done if t <= b_last) / len(a_done)
        a_start = min(r["started"] for r in _records(stack, a_ids + b_ids))  # the worker's first job
        a_span = a_done[-1] - a_start
        time_share = (b_last - a_start) / a_span
        print(f"2. key A queued {args.heavy} bulk jobs, then key B submitted {args.light}:")
        print(f"   when B's last job finished, A had finished {share:.1%} of its jobs "
              f"({sum(1 for t in a_done if t <= b_last)} of {len(a_done)}); "
              f"{time_share:.1%} of the time A's jobs took ({a_span:.1f} s) (target: under 10% of A's jobs)")


if __name__ == "__main__":
    main()
