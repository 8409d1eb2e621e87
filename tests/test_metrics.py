"""GET /metrics is prometheus-client's exposition, read back with
prometheus-client's own parser: HELP and TYPE for every family, counters named
*_total, and samples labelled by model and worker name (never a list index).
Against the in-process backend and against a real Redis with a real worker."""

from __future__ import annotations

import time

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from api import RedisStore, create_app
from api.metrics import ApiMetrics
from redis_fixtures import start_worker
from test_api_support import live_server

CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "temperature": 0}


def scrape(base_url: str) -> dict:
    """{family name: family}, after checking the response and the text's HELP/TYPE lines."""
    r = httpx.get(f"{base_url}/metrics", timeout=30)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(r.text)


def parse(text: str) -> dict:
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, f in families.items():
        assert f.documentation, f"{name} has no HELP"
        assert f"# TYPE {name}{'_total' if f.type == 'counter' else ''} {f.type}" in text, name
        if f.type == "counter":
            assert all(s.name in (name + "_total", name + "_created") for s in f.samples), f.samples
    assert not any(name.endswith("_created") for name in families)  # no created-time series
    return families


def value(families: dict, name: str, **labels) -> float:
    f = families[name]
    hits = [s.value for s in f.samples if all(s.labels.get(k) == v for k, v in labels.items())
            and not s.name.endswith("_created")]
    assert len(hits) == 1, (name, labels, f.samples)
    return hits[0]


def test_metrics_in_process(tiny_engine):
    from jobs.local import LocalBackend

    backend = LocalBackend(tiny_engine)
    try:
        with live_server(create_app(backend)) as url:
            model = httpx.get(f"{url}/v1/models", timeout=30).json()["data"][0]["id"]
            assert httpx.post(f"{url}/v1/chat/completions", json={**CHAT, "model": model}, timeout=60).status_code == 200
            first = scrape(url)
            assert first["llamaq_engine_generated_tokens"].type == "counter"
            assert first["llamaq_engine_requests_finished"].type == "counter"
            assert first["llamaq_engine_running"].type == "gauge"
            tokens = value(first, "llamaq_engine_generated_tokens", worker="local")
            assert tokens >= 1
            assert value(first, "llamaq_jobs", model=model, status="succeeded") >= 1
            assert value(first, "llamaq_queue_depth", model=model) == 0
            assert value(first, "llamaq_backend_up") == 1
            assert first["llamaq_http_request_duration_seconds"].type == "histogram"
            counts = [(s.labels, s.value) for s in first["llamaq_http_request_duration_seconds"].samples
                      if s.name.endswith("_count") and s.labels["route"] == "/v1/chat/completions"]
            assert counts == [({"route": "/v1/chat/completions", "method": "POST", "status": "2xx"}, 1)]

            httpx.post(f"{url}/v1/chat/completions", json={**CHAT, "model": model}, timeout=60)
            again = scrape(url)
            assert value(again, "llamaq_engine_generated_tokens", worker="local") > tokens  # counts up
    finally:
        backend.close()


def test_backend_down_still_answers():
    families = parse(ApiMetrics().render(None).decode())
    assert value(families, "llamaq_backend_up") == 0


@pytest.fixture(scope="module")
def fleet(redis_server, tiny_model_path, tmp_path_factory):
    from jobs.remote import RedisBackend

    redis.Redis.from_url(redis_server.url).flushall()
    w = start_worker(redis_server.url, tiny_model_path, parallel=4, log_dir=tmp_path_factory.mktemp("worker-logs"))
    try:
        name = w.wait_ready()
        with live_server(create_app(RedisBackend(redis_server.url), store=RedisStore(redis_server.url))) as url:
            yield url, name
    finally:
        w.stop()


def test_metrics_over_redis_labelled_by_worker_name(fleet, tiny_model_path):
    url, name = fleet
    job = httpx.post(f"{url}/v1/jobs", timeout=30, json={"endpoint": "/v1/chat/completions",
                                                          "body": {**CHAT, "model": tiny_model_path.stem}})
    assert job.status_code == 202
    deadline = time.monotonic() + 60
    while (rec := httpx.get(f"{url}/v1/jobs/{job.json()['id']}", timeout=30).json())["status"] not in (
            "succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, rec
        time.sleep(0.05)
    assert rec["status"] == "succeeded", rec
    families = scrape(url)
    assert value(families, "llamaq_workers") == 1
    assert value(families, "llamaq_worker_parallel", worker=name) == 4
    assert value(families, "llamaq_jobs_submitted") >= 1 and families["llamaq_jobs_submitted"].type == "counter"
    assert value(families, "llamaq_jobs", model=tiny_model_path.stem, status="succeeded") >= 1
    # The engine's counters come from the worker's heartbeat, labelled with its name.
    assert families["llamaq_engine_generated_tokens"].type == "counter"
    assert [s.labels["worker"] for s in families["llamaq_engine_generated_tokens"].samples] == [name]
