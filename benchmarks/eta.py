"""How good is a queued job's wait estimate (`eta_s`)? Predicted at submit against the actual start.

    python benchmarks/eta.py [--redis-db 10]

One worker of a deliberately slow captioner (the tests' `blip-slow`: batches of 4 that take about a
second here), and a run of bursts with idle gaps between them, and a trickle: for every job, the
`eta_s` the 202 answer predicted against its actual wait (`started_at - created_at`, server side).

Error of a job: |predicted - actual| / max(actual, one batch time). A start cannot be predicted
closer than the batch it falls in, so errors under one batch time are not inflated by a tiny
denominator (a job that starts at once, predicted 0 s, actual 20 ms, counts as exact). Reported
p50 and p90 over all jobs, and over jobs that waited at least two batch times (the ones a wait
estimate is for). Beside it, the estimator vlmq used before (jobs ahead / jobs finished over the last
minute, idle time included) computed on the same run from the job records.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import sys
import time
from pathlib import Path

import httpx
from PIL import Image
from skimage import data as photos

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.stack import Stack
from tests.utils.slow_model import build_slow_blip

MODEL = "eta-slow"
BATCH = 4
#: (jobs at once, seconds idle after): bursts with idle gaps, a trickle, a burst while busy.
PLAN = [(12, 6.0), (1, 4.0), (8, 8.0), *[(1, 0.4)] * 8, (10, 0.0), (6, 10.0), (3, 0.0)]


def _uri() -> str:
    buffer = io.BytesIO()
    Image.fromarray(photos.chelsea()).resize((64, 48)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis-db", type=int, default=10)
    args = parser.parse_args()

    cache = ROOT / "benchmarks" / ".cache"
    from vlmq.tasks.demo import build_demo_models

    build_demo_models(cache / "demo-models")
    slow = build_slow_blip(cache / "demo-models", cache / "slow-models" / "blip-slow")
    models = {MODEL: {"adapter": "blip_caption", "source": str(slow), "tasks": ["caption"], "max_batch_size": BATCH}}
    image = _uri()
    body = {"type": "caption", "model": MODEL, "image_url": image, "max_new_tokens": 24, "cache": False}
    with Stack(models=[MODEL], redis_db=args.redis_db, env={"VLMQ_MODELS": json.dumps(models)}) as stack, \
            httpx.Client(base_url=stack.url, timeout=120) as api:
        for _ in range(2):  # warm-up: the worker's batch time is known from here on
            api.post("/v1/jobs", json=body, headers={"Prefer": "wait=60"})
        submitted: list[tuple[str, float | None, int | None]] = []
        for count, idle in PLAN:
            for _ in range(count):
                job = api.post("/v1/jobs", json=body).json()
                submitted.append((job["id"], job.get("eta_s"), job.get("position")))
            time.sleep(idle)
        jobs = []
        for job_id, eta, position in submitted:
            while (job := api.get(f"/v1/jobs/{job_id}").json())["status"] in ("queued", "running"):
                time.sleep(0.2)
            jobs.append((job, eta, position))
        batch_s = float(stack.redis.hget(f"vlmq:pace:{MODEL}", "batch_s"))

    created = [j["created_at"] for j, _, _ in jobs]
    finished = sorted(_ts(j["completed_at"]) for j, _, _ in jobs)
    rows = []
    for (job, eta, position), stamp in zip(jobs, created, strict=True):
        actual = job["queue_ms"] / 1000
        t = _ts(stamp)
        # before: jobs ahead / the model's rate over the last minute (counting idle seconds too)
        rate = sum(1 for f in finished if t - 60 <= f < t) / 60
        old = (position or 0) / rate if rate else None
        rows.append((actual, eta, old))

    def errors(pick, only_long: bool) -> list[float]:
        out = []
        for actual, eta, old in rows:
            predicted = pick(eta, old)
            if predicted is None or only_long and actual < 2 * batch_s:
                continue
            out.append(abs(predicted - actual) / max(actual, batch_s))
        return out

    print(f"# Wait estimate vs actual start ({len(rows)} jobs, one worker, batches of {BATCH}, "
          f"batch time {batch_s:.2f} s)\n")
    print("| estimator | jobs | error p50 | error p90 | jobs waiting ≥ 2 batches | their p50 | their p90 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, pick in (("vlmq: batches ahead x batch time / workers", lambda eta, old: eta),
                       ("before: jobs ahead / last minute's rate", lambda eta, old: old)):
        every, long = errors(pick, False), errors(pick, True)
        print(f"| {name} | {len(every)} | {_pct(every, 50):.0%} | {_pct(every, 90):.0%} | {len(long)} | "
              f"{_pct(long, 50):.0%} | {_pct(long, 90):.0%} |")
    print("\nerror = |predicted - actual| / max(actual, batch time); predicted at submit (the 202's eta_s).")


def _ts(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


if __name__ == "__main__":
    main()
