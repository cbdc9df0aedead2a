"""Counters and histograms that workers write to Redis and the API's /metrics reads back.

Why Redis counters: workers are many processes on many hosts, started and killed at will; the
API already reads Redis. Each worker adds to shared hashes (HINCRBY / HINCRBYFLOAT are atomic),
so a figure survives the worker that produced it, needs no scrape target per worker and no
prometheus_client multiprocess directory. Every API replica exposes the same fleet-wide values:
scrape one, or aggregate with max() across replicas.

Keys: ``vlmq:metrics:{name}`` hashes whose fields are ``label=value|label=value|...`` (and for
histograms ``...|le=<bound>`` plus ``...|sum`` and ``...|count``).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterator

import redis

from vlmq.keyspace import METRICS_PREFIX

SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def labels_field(labels: dict[str, str]) -> str:
    """The hash field of one label set (labels sorted by name)."""
    return "|".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _parse(field: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in field.split("|") if "=" in part)


class MetricsStore:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def inc(self, name: str, labels: dict[str, str], amount: float = 1, pipe=None) -> None:
        target = pipe if pipe is not None else self.redis
        target.hincrbyfloat(METRICS_PREFIX + name, labels_field(labels), amount)

    def observe(self, name: str, labels: dict[str, str], value: float, buckets: tuple[float, ...], pipe=None) -> None:
        own = pipe is None
        pipe = pipe if pipe is not None else self.redis.pipeline(transaction=False)
        base = labels_field(labels)
        index = bisect.bisect_left(buckets, value)
        bound = str(buckets[index]) if index < len(buckets) else "+Inf"
        pipe.hincrbyfloat(METRICS_PREFIX + name, f"{base}|le={bound}", 1)
        pipe.hincrbyfloat(METRICS_PREFIX + name, f"{base}|sum", value)
        pipe.hincrbyfloat(METRICS_PREFIX + name, f"{base}|count", 1)
        if own:
            pipe.execute()

    def set(self, name: str, labels: dict[str, str], value: float) -> None:
        self.redis.hset(METRICS_PREFIX + name, labels_field(labels), value)

    # --- reading ----------------------------------------------------------------------------

    def counter(self, name: str) -> Iterator[tuple[dict[str, str], float]]:
        for field, value in self.redis.hgetall(METRICS_PREFIX + name).items():
            yield _parse(field.decode() if isinstance(field, bytes) else field), float(value)

    def histogram(
        self, name: str, buckets: tuple[float, ...]
    ) -> Iterator[tuple[dict[str, str], list[tuple[str, float]], float, float]]:
        """(labels, cumulative [(le, count)], sum, count) per label set."""
        per: dict[str, dict[str, float]] = defaultdict(dict)
        for field, value in self.redis.hgetall(METRICS_PREFIX + name).items():
            field = field.decode() if isinstance(field, bytes) else field
            base, _, last = field.rpartition("|")
            per[base][last] = float(value)
        for base, values in per.items():
            running, cumulative = 0.0, []
            for bound in [*map(str, buckets), "+Inf"]:
                running += values.get(f"le={bound}", 0.0)
                cumulative.append((bound, running))
            yield _parse(base), cumulative, values.get("sum", 0.0), values.get("count", 0.0)
