"""`/metrics` for Prometheus: HTTP figures of this API process, and vlmq's fleet-wide figures.

HTTP request counts and latencies come from prometheus-fastapi-instrumentator (this process;
with several uvicorn processes set PROMETHEUS_MULTIPROC_DIR, as prometheus_client requires).
Job, worker, batch, cache and queue figures are read from Redis at scrape time: workers and API
replicas add to shared counters there (vlmq/metrics_store.py says why), and queue depth and
online workers are read live. So every replica reports the same fleet-wide values: scrape one,
or take max() across replicas.
"""

from __future__ import annotations

import logging
import os

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_fastapi_instrumentator import Instrumentator

from vlmq.fleet import Fleet
from vlmq.metrics_store import BATCH_BUCKETS, SECONDS_BUCKETS, MetricsStore
from vlmq.registry import Registry

log = logging.getLogger("vlmq.api")


class FleetCollector:
    """A prometheus_client collector over the Redis counters and the live fleet."""

    def __init__(self, metrics: MetricsStore, fleet: Fleet, registry: Registry) -> None:
        self.metrics = metrics
        self.fleet = fleet
        self.registry = registry

    def collect(self):
        try:
            yield from self._counters()
            yield from self._histograms()
            yield from self._fleet()
        except Exception as exc:  # noqa: BLE001 - Redis away: HTTP metrics still scrape
            log.warning("fleet metrics unavailable: %s", exc)

    def _counters(self):
        for name, help_text, labels in (
            ("jobs_submitted", "Jobs accepted by the API.", ["type", "model"]),
            ("jobs_finished", "Jobs that reached a final status.", ["type", "model", "status"]),
            ("cache_answers", "How submits were answered: hit, semantic_hit, joined, miss.", ["tier"]),
        ):
            family = CounterMetricFamily(f"vlmq_{name}", help_text, labels=labels)
            for values, count in self.metrics.counter(name):
                family.add_metric([values.get(label, "") for label in labels], count)
            yield family

    def _histograms(self):
        for name, exported, help_text, labels, buckets in (
            ("queue_seconds", "vlmq_job_queue_seconds", "Time from accepted to started.", ["type", "model"],
             SECONDS_BUCKETS),
            ("run_seconds", "vlmq_job_run_seconds", "Time from started to finished.", ["type", "model"],
             SECONDS_BUCKETS),
            ("batch_size", "vlmq_batch_size", "Jobs per model forward pass.", ["model"], BATCH_BUCKETS),
            ("batch_seconds", "vlmq_batch_seconds", "Time of one batch's predict call.", ["model"], SECONDS_BUCKETS),
            ("batch_stage_seconds", "vlmq_batch_stage_seconds",
             ("Where a batch's time went: images, preprocess, model_waited (the model free while this batch "
              "was still loading), claim, generate, finish."), ["model", "stage"], SECONDS_BUCKETS),
        ):
            family = HistogramMetricFamily(exported, help_text, labels=labels)
            for values, cumulative, total, _count in self.metrics.histogram(name, buckets):
                family.add_metric([values.get(label, "") for label in labels], cumulative, total)
            yield family
        load = GaugeMetricFamily("vlmq_model_load_seconds", "Seconds the last worker took to load the model.",
                                 labels=["model"])
        for values, seconds in self.metrics.counter("model_load_seconds"):
            load.add_metric([values.get("model", "")], seconds)
        yield load

    def _fleet(self):
        depth = GaugeMetricFamily("vlmq_queue_depth", "Jobs waiting in each model's queue.", labels=["model"])
        online = GaugeMetricFamily("vlmq_workers_online", "Workers heartbeating, per model.", labels=["model"])
        ready = GaugeMetricFamily("vlmq_workers_ready", "Workers with the model loaded.", labels=["model"])
        for name, fleet in self.fleet.describe(self.registry.names).items():
            depth.add_metric([name], fleet.queue_depth)
            online.add_metric([name], len(fleet.workers))
            ready.add_metric([name], fleet.ready_workers)
        yield from (depth, online, ready)


def install_metrics(app: FastAPI, collector_factory) -> None:
    """Expose /metrics: the instrumentator's HTTP metrics plus the fleet collector. With several
    processes (PROMETHEUS_MULTIPROC_DIR set, as `vlmq api --workers N` does), the HTTP metrics are
    every process's, summed from prometheus_client's files; the fleet figures come from Redis either
    way. (The instrumentator's own `expose` would drop the fleet collector in that mode.)"""
    registry = CollectorRegistry(auto_describe=False)
    Instrumentator(registry=registry, excluded_handlers=["/metrics", "/healthz", "/readyz"]).instrument(app)
    fleet = _Lazy(collector_factory)
    registry.register(fleet)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        scraped = registry
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            scraped = CollectorRegistry(auto_describe=False)
            multiprocess.MultiProcessCollector(scraped)
            scraped.register(fleet)
        return Response(generate_latest(scraped), media_type=CONTENT_TYPE_LATEST)


class _Lazy:
    """The collector is built at the first scrape (the services exist only once the app started)."""

    def __init__(self, factory) -> None:
        self.factory = factory
        self.collector = None

    def collect(self):
        if self.collector is None:
            self.collector = self.factory()
            if self.collector is None:
                return
        yield from self.collector.collect()
