"""Prometheus metrics with prometheus-client: the API's request latency, plus
the jobs backend's numbers (jobs by status, queue depth per model, workers,
each engine's counters), labelled by model and worker name.

    m = ApiMetrics()
    m.observe(route, method, status, seconds)         # the middleware below
    body = m.render(backend.metrics() or None)        # GET /metrics, CONTENT_TYPE
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4 as CONTENT_TYPE
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = ["CONTENT_TYPE", "ApiMetrics", "MetricsMiddleware", "backend_families"]

disable_created_metrics()  # no *_created series: scrapers see process start time elsewhere
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_]")

# Engine statistics (engine.EngineStats) that only ever grow; other numbers are gauges.
ENGINE_COUNTERS = {
    "requests_finished": "Requests the engine finished",
    "prompt_tokens_computed": "Prompt tokens the engine computed",
    "prompt_tokens_reused": "Prompt tokens reused from cached prefixes instead of computed",
    "generated_tokens": "Tokens the engine generated",
    "evictions": "Cached sequences evicted to make room",
    "steps": "Engine steps (one llama_decode each)",
    "batch_tokens": "Tokens decoded, summed over steps (mean batch = rate of this / rate of steps)",
}
# Cumulative job counts some backends keep (jobs.store's stats hash).
JOB_COUNTERS = {"submitted": "Jobs submitted", "failed": "Jobs failed at submission"}


class ApiMetrics:
    """The API's own metrics, in a registry of its own (one per app)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self._latency = Histogram(
            "llamaq_http_request_duration_seconds", "HTTP request latency (streams: until the last byte)",
            ("route", "method", "status"), buckets=BUCKETS, registry=self.registry)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self._latency.labels(route, method, f"{status // 100}xx").observe(seconds)

    def render(self, backend: dict | None) -> bytes:
        """The exposition text: the API's metrics, then the backend's (None: unreachable)."""
        return generate_latest(_Scrape(self.registry, backend))


class _Scrape:
    """A one-off collector: what generate_latest reads for one scrape."""

    def __init__(self, registry: CollectorRegistry, backend: dict | None):
        self.registry, self.backend = registry, backend

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()
        up = GaugeMetricFamily("llamaq_backend_up", "1 if the jobs backend answered this scrape")
        up.add_metric([], 0 if self.backend is None else 1)
        yield up
        if self.backend is not None:
            yield from backend_families(self.backend)


def _number(v) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)) and math.isfinite(v):
        return float(v)
    return None


def _metric_name(key: str) -> str:
    return _NAME_BAD.sub("_", key)


def backend_families(m: dict) -> Iterator[Metric]:
    """The backend's metrics() dict as metric families (see jobs' backends)."""
    yield from _job_families(m)
    if isinstance(m.get("workers"), list):
        workers = [(str(w.get("name", "?")), w) for w in m["workers"] if isinstance(w, dict)]
        n = GaugeMetricFamily("llamaq_workers", "Live workers")
        n.add_metric([], len(workers))
        yield n
        yield from _per_worker("llamaq_worker", "Worker's", workers, counters={}, skip={"pid"})
    engines = [(str(e.get("worker", "local")), e) for e in m.get("engines") or [] if isinstance(e, dict)]
    yield from _per_worker("llamaq_engine", "Engine's", engines, counters=ENGINE_COUNTERS, skip=set())


def _job_families(m: dict) -> Iterator[Metric]:
    depth = GaugeMetricFamily("llamaq_queue_depth", "Jobs queued, per model", labels=["model"])
    for model, v in sorted((m.get("queue_depth") or {}).items()):
        if _number(v) is not None:
            depth.add_metric([str(model)], _number(v))
    yield depth
    per_model, totals = m.get("models"), m.get("jobs") or {}
    if per_model is None and len(m.get("queue_depth") or {}) == 1:  # one model: the backend's counts are its
        per_model, totals = {next(iter(m["queue_depth"])): totals}, {}
    jobs = GaugeMetricFamily("llamaq_jobs", "Jobs by status now, per model", labels=["model", "status"])
    for model, counts in sorted((per_model or {}).items()):
        for status, v in sorted(counts.items()):
            if _number(v) is not None:
                jobs.add_metric([str(model), str(status)], _number(v))
    yield jobs
    for key, v in sorted(totals.items()):  # a store's cumulative counts (jobs submitted, ...)
        if _number(v) is not None:
            c = CounterMetricFamily(f"llamaq_jobs_{_metric_name(key)}", JOB_COUNTERS.get(key, f"Jobs {key}"))
            c.add_metric([], _number(v))
            yield c


def _per_worker(prefix: str, what: str, items: list[tuple[str, dict]], counters: dict[str, str],
                skip: set[str]) -> Iterator[Metric]:
    """One family per numeric field, one sample per worker (labelled by name)."""
    fields = sorted({k for _, d in items for k, v in d.items() if _number(v) is not None} - skip)
    for field in fields:
        name = f"{prefix}_{_metric_name(field)}"
        if field in counters:
            fam = CounterMetricFamily(name, counters[field], labels=["worker"])
        else:
            fam = GaugeMetricFamily(name, f"{what} {field.replace('_', ' ')} (now)", labels=["worker"])
        for worker, d in items:
            if _number(d.get(field)) is not None:
                fam.add_metric([worker], _number(d[field]))
        yield fam


class MetricsMiddleware:
    """Pure ASGI (keeps receive untouched, which disconnect detection needs)."""

    def __init__(self, app, metrics: ApiMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(path, scope.get("method", ""), status, time.perf_counter() - start)
