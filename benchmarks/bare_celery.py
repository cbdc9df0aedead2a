"""Calibration for vlmq's per-job overhead: a bare Celery round trip on the same Redis.

    python benchmarks/bare_celery.py worker --redis-url redis://127.0.0.1:6379/9     # a process of its own
    round_trips(redis_url, n)                                                        # from the benchmark

The least a Celery-based service can do per job: publish a task message (`send_task`), a worker
(solo pool, prefetch 1, late acks, as vlmq's workers) takes it and runs a task that writes one Redis
key; the client waits for that key. No validation, no image, no record, no batching, no events.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import redis
from celery import Celery

QUEUE = "bench.bare-celery"
DONE = "bench:bare-celery:{}"


def make_app(redis_url: str) -> Celery:
    app = Celery("bare", broker=redis_url, set_as_current=False)
    app.conf.update(task_ignore_result=True, task_acks_late=True, worker_prefetch_multiplier=1,
                    worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)
    client = redis.Redis.from_url(redis_url)

    @app.task(name="bare.done")
    def done(token: str) -> None:
        client.lpush(DONE.format(token), b"1")

    return app


def round_trips(redis_url: str, n: int) -> list[float]:
    """`n` sequential round trips (send_task -> the worker's write seen), in milliseconds."""
    app = make_app(redis_url)
    client = redis.Redis.from_url(redis_url)
    times = []
    for _ in range(n + 5):
        token = uuid.uuid4().hex
        began = time.perf_counter()
        app.send_task("bare.done", args=[token], queue=QUEUE)
        client.brpop([DONE.format(token)], timeout=30)
        times.append((time.perf_counter() - began) * 1000)
    app.close()
    return times[5:]  # the first ones warm the connections


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["worker", "measure"])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("-n", type=int, default=200)
    args = parser.parse_args()
    if args.role == "worker":
        make_app(args.redis_url).Worker(queues=[QUEUE], pool="solo", concurrency=1, loglevel="WARNING",
                                        without_mingle=True, without_gossip=True).start()
    else:
        times = round_trips(args.redis_url, args.n)
        print(f"bare Celery round trip: p50 {statistics.median(times):.2f} ms over {len(times)}")


if __name__ == "__main__":
    main()
