"""Prometheus text exposition: the API's own request latency histograms, plus
whatever numbers the jobs backend reports (queue depth per model, jobs by
status, tokens generated, prompt tokens computed vs reused, batch sizes)."""

from __future__ import annotations

import math
import re
import threading
import time

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_]")


class Histogram:
    def __init__(self):
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, v: float) -> None:
        for i, b in enumerate(BUCKETS):
            if v <= b:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.sum += v


class ApiMetrics:
    """Request latency by route template, method and status class."""

    def __init__(self):
        self._lock = threading.Lock()
        self._hist: dict[tuple[str, str, str], Histogram] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, f"{status // 100}xx")
        with self._lock:
            h = self._hist.get(key)
            if h is None:
                h = self._hist[key] = Histogram()
            h.observe(seconds)

    def render(self) -> list[str]:
        name = "llamaq_http_request_duration_seconds"
        out = [f"# HELP {name} HTTP request latency (streams: until the last byte)", f"# TYPE {name} histogram"]
        with self._lock:
            items = sorted(self._hist.items())
            for (route, method, status), h in items:
                labels = f'route="{_esc(route)}",method="{method}",status="{status}"'
                acc = 0
                for b, c in zip(BUCKETS, h.counts):
                    acc += c
                    out.append(f'{name}_bucket{{{labels},le="{b}"}} {acc}')
                acc += h.counts[-1]
                out.append(f'{name}_bucket{{{labels},le="+Inf"}} {acc}')
                out.append(f"{name}_sum{{{labels}}} {h.sum:.6f}")
                out.append(f"{name}_count{{{labels}}} {acc}")
        return out


def _esc(v) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# Label names, level by level, for the backend's nested numbers:
# {"jobs": {"queued": 3}} -> llamaq_jobs{status="queued"} 3,
# {"models": {"m": {"queued": 1}}} -> llamaq_models{model="m",status="queued"} 1;
# a list of dicts (engines, workers) -> llamaq_engines_<field>{engine="0"}.
LABELS = {"jobs": ("status",), "queue_depth": ("model",), "models": ("model", "status"),
          "engines": ("engine",), "workers": ("worker",)}


def render_backend(metrics: dict) -> list[str]:
    """The backend's numbers as Prometheus samples named after their keys, plus
    the mean decode batch size per engine (batch_tokens / steps)."""
    out: list[str] = []
    for key, value in sorted(metrics.items()):
        _render(out, key, LABELS.get(key, ("key",)), value, {})
    for i, eng in enumerate(metrics.get("engines") or []):
        if isinstance(eng, dict) and eng.get("steps"):
            mean = eng.get("batch_tokens", 0) / eng["steps"]
            out.append(f'llamaq_engines_mean_batch_tokens{{engine="{i}"}} {mean:.3f}')
    return out


def _sample(out: list[str], name: str, value, labels: dict) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        return
    value = int(value) if isinstance(value, bool) else value
    lab = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
    metric = "llamaq_" + _NAME_BAD.sub("_", name)
    out.append(f"{metric}{{{lab}}} {value}" if lab else f"{metric} {value}")


def _render(out: list[str], name: str, label_names: tuple, value, labels: dict) -> None:
    if isinstance(value, (int, float)):
        _sample(out, name, value, labels)
        return
    label, rest = label_names[0], label_names[1:] or ("key",)
    if isinstance(value, dict):
        for k, v in sorted(value.items(), key=lambda kv: str(kv[0])):
            if isinstance(v, (int, float, dict)):
                _render(out, name, rest, v, {**labels, label: k})
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, dict):
                for k, v in sorted(item.items()):
                    if isinstance(v, (int, float)):
                        _sample(out, f"{name}_{k}", v, {**labels, label: i})


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
