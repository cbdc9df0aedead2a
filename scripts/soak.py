"""Soak: thousands of jobs while workers are killed and restarted at random; nothing may be lost.

    python scripts/soak.py --jobs 3000 --seconds 120

Starts its own embedded Redis (append-only), the API and three workers (two of one model, one of
another) with a short visibility timeout, submits jobs from several client threads (single submits
and batches), and meanwhile a chaos thread SIGKILLs or SIGTERMs a random worker every few seconds
and starts a new one. At the end it waits for every accepted job to be final and counts:
accepted = finished (succeeded + failed), lost = 0 (accepted, never final), duplicated = 0 (two
final events in one job's stream). Exits non-zero if a job was lost or duplicated.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.utils.images import astronaut, cat, coffee, data_uri
from tests.utils.processes import start_api, start_worker, wait_ready
from vlmq.cli.redis_server import start_embedded
from vlmq.tasks.demo import build_demo_models

FINAL = {"succeeded", "failed", "canceled", "aborted"}
MODELS = ["blip-base", "blip-base", "vilt-vqa"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000, help="jobs to submit")
    parser.add_argument("--seconds", type=float, default=120, help="longest time spent submitting")
    parser.add_argument("--chaos-every", type=float, default=3.0, help="seconds between kills")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    random.seed(args.seed)

    data_dir = Path(tempfile.mkdtemp(prefix="vlmq-soak-"))
    build_demo_models(data_dir / "demo-models")
    server = start_embedded(data_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLMQ_")}
    env.update(VLMQ_REDIS_URL=server.url, VLMQ_DATA_DIR=str(data_dir), VLMQ_VISIBILITY_TIMEOUT_S="8",
               VLMQ_MAX_ATTEMPTS="5", VLMQ_LOG_FORMAT="text", PYTHONUNBUFFERED="1", VLMQ_CACHE_ENABLED="false")
    logs = data_dir / "logs"
    api, url = start_api(env, logs)
    workers = [start_worker(model, env, logs) for model in MODELS]
    wait_ready(server.url, workers, MODELS)
    print(f"soak: redis {server.url}, api {url}, workers {MODELS}, data {data_dir}", flush=True)

    images = [data_uri(img.resize((48, 48))) for img in (astronaut(), cat(), coffee())]
    accepted: list[str] = []
    refused = Counter()
    lock = threading.Lock()
    stop_submitting = threading.Event()
    deadline = time.monotonic() + args.seconds + 30

    def job(i: int) -> dict:
        if i % 3 == 2:
            return {"type": "vqa", "model": "vilt-vqa", "image_url": images[i % 3], "question": f"what is {i}?"}
        return {"type": "caption", "model": "blip-base", "image_url": images[i % 3], "max_new_tokens": 4,
                "cache": False}

    def client(worker_index: int, count: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            start = i = worker_index * count
            end = i + count
            while i < end and time.monotonic() < deadline:
                # spread the submissions over the whole run, so the chaos hits jobs in flight
                ahead = (i - start) / count * args.seconds - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(min(ahead, 1.0))
                    continue
                try:
                    if i % 10 < 5:
                        size = min(25, end - i)
                        reply = http.post("/v1/batches", json={"jobs": [job(i + k) for k in range(size)]})
                        ids = [j["id"] for j in reply.json().get("jobs", [])] if reply.status_code == 202 else []
                        if reply.status_code != 202:
                            refused[reply.status_code] += size
                        i += size
                    else:
                        reply = http.post("/v1/jobs", json=job(i))
                        ids = [reply.json()["id"]] if reply.status_code == 202 else []
                        if reply.status_code != 202:
                            refused[reply.status_code] += 1
                        i += 1
                except httpx.HTTPError:
                    refused["connection"] += 1
                    continue
                with lock:
                    accepted.extend(ids)

    kills = Counter()

    def chaos() -> None:
        while not stop_submitting.is_set():
            time.sleep(args.chaos_every)
            index = random.randrange(len(workers))
            victim = workers[index]
            how = random.choice(["SIGKILL", "SIGKILL", "SIGTERM"])
            if how == "SIGKILL":
                victim.kill9()
            else:
                victim.stop(signal.SIGTERM, timeout=60)
            kills[how] += 1
            workers[index] = start_worker(MODELS[index], env, logs)

    per_client = args.jobs // 4
    began = time.monotonic()
    threads = [threading.Thread(target=client, args=(n, per_client)) for n in range(4)]
    chaos_thread = threading.Thread(target=chaos)
    for t in threads:
        t.start()
    chaos_thread.start()
    for t in threads:
        t.join()
    stop_submitting.set()
    chaos_thread.join()
    submit_s = time.monotonic() - began
    print(f"soak: {len(accepted)} accepted in {submit_s:.0f}s; refused {dict(refused)}; workers killed {dict(kills)}",
          flush=True)

    wait_ready(server.url, workers, MODELS, timeout=180)
    client_redis = redis.Redis.from_url(server.url)
    finish_deadline = time.monotonic() + 600
    statuses: dict[str, str] = {}
    while time.monotonic() < finish_deadline:
        pipe = client_redis.pipeline(transaction=False)
        for job_id in accepted:
            pipe.hget(f"vlmq:job:{job_id}", "status")
        statuses = {j: (s.decode() if s else "missing") for j, s in zip(accepted, pipe.execute())}
        if all(s in FINAL for s in statuses.values()):
            break
        time.sleep(2)
    pipe = client_redis.pipeline(transaction=False)
    for job_id in accepted:
        pipe.xrange(f"vlmq:events:{job_id}")
    duplicated = sum(
        1 for events in pipe.execute() if sum(1 for _id, e in events if e[b"event"].decode() in FINAL) > 1
    )
    attempts = Counter()
    pipe = client_redis.pipeline(transaction=False)
    for job_id in accepted:
        pipe.hget(f"vlmq:job:{job_id}", "attempts")
    for value in pipe.execute():
        attempts[int(value or 0)] += 1
    counts = Counter(statuses.values())
    lost = sum(n for s, n in counts.items() if s not in FINAL)
    total_s = time.monotonic() - began
    summary = {
        "accepted": len(accepted),
        "finished": sum(n for s, n in counts.items() if s in FINAL),
        "by_status": dict(counts),
        "lost": lost,
        "duplicated": duplicated,
        "attempts_histogram": dict(sorted(attempts.items())),
        "workers_killed": dict(kills),
        "refused_at_submit": dict(refused),
        "seconds": round(total_s, 1),
    }
    print(json.dumps(summary, indent=2))
    for proc in [api, *workers]:
        proc.stop()
    server.stop()
    return 0 if lost == 0 and duplicated == 0 and summary["finished"] == len(accepted) else 1


if __name__ == "__main__":
    sys.exit(main())
