"""Bounded requests over HTTP, with real servers on the tiny model: per-key job
and batch limits (429 + Retry-After, nobody else's request fails), caps on
request fields (400 naming the field), uploads refused past their limit
without reading the rest, SSE keep-alives while a request waits in the queue,
max_tokens clamped to the context, and per-key isolation over Redis."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import httpx
import openai
import pytest
import redis

from api import ApiConfig, LocalStore, RedisStore, create_app
from api.batches import BatchLimits
from model_fixtures import tiny_config
from redis_fixtures import start_worker
from test_api_support import chat_line, client, jsonl, live_server, read_lines, wait_batch

MSG = [{"role": "user", "content": "Say something about rivers."}]
NO_EOS = {"1": -100, "106": -100}  # the tokenizer's end ids: generation runs to its limit


@pytest.fixture(scope="module")
def one_seq_backend(tiny_model_path):
    """One engine sequence: a long job holds it, so later requests wait in the queue."""
    from engine import Engine
    from jobs.local import LocalBackend

    eng = Engine(tiny_config(tiny_model_path, n_ctx=8192, n_parallel=1, n_batch=256))
    b = LocalBackend(eng)
    yield b
    b.close()
    eng.close()


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


class Blocker:
    """A long interactive job owning the only sequence until cancelled."""

    def __init__(self, url: str, key: str):
        self.url, self.key = url, key
        body = {"prompt": "Once", "max_tokens": 8000, "temperature": 0, "logit_bias": NO_EOS}
        r = httpx.post(f"{url}/v1/jobs", json={"endpoint": "/v1/completions", "body": body,
                                               "priority": "interactive"}, headers=auth(key))
        assert r.status_code == 202, r.text
        self.id = r.json()["id"]
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/v1/jobs/{self.id}", headers=auth(key)).json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.02)

    def cancel(self) -> None:
        httpx.post(f"{self.url}/v1/jobs/{self.id}/cancel", headers=auth(self.key))


@pytest.fixture(scope="module")
def limited_url(one_seq_backend, tmp_path_factory):
    config = ApiConfig(api_keys=["a", "b", "c"], max_jobs_per_key=2, retry_after_s=3, keepalive_s=0.1)
    app = create_app(one_seq_backend, store=LocalStore(tmp_path_factory.mktemp("limits-store")), config=config,
                     batch_limits=BatchLimits(max_bytes=64 * 1024, max_lines=100))
    with live_server(app) as url:
        yield url


def test_flood_past_a_key_limit_gets_429_and_nothing_else_fails(limited_url):
    url = limited_url
    blocker = Blocker(url, "c")  # everything below waits in the queue behind it
    body = {"messages": MSG, "max_tokens": 3, "temperature": 0}
    with ThreadPoolExecutor(12) as pool:
        flood = [pool.submit(httpx.post, f"{url}/v1/chat/completions", json=body, headers=auth("a"), timeout=60)
                 for _ in range(10)]
        other = pool.submit(httpx.post, f"{url}/v1/chat/completions", json=body, headers=auth("b"), timeout=60)
        deadline = time.monotonic() + 30
        while sum(f.done() for f in flood) < 8:  # the refusals come back at once; the admitted wait
            assert time.monotonic() < deadline, [f.result().status_code for f in flood if f.done()]
            time.sleep(0.02)
        refused = [f.result() for f in flood if f.done()]
        blocker.cancel()
        answers = [f.result() for f in flood]
        other = other.result()
    assert len(refused) == 8 and all(r.status_code == 429 for r in refused)
    for r in refused:
        assert int(r.headers["retry-after"]) == 3
        assert r.json()["error"]["type"] == "rate_limit_error" and r.json()["error"]["code"] == "too_many_jobs"
    admitted = [r for r in answers if r.status_code != 429]
    assert len(admitted) == 2 and all(r.status_code == 200 and r.json()["choices"] for r in admitted)
    assert other.status_code == 200  # another key is not limited by a's flood


def test_queued_jobs_per_key_free_up_when_they_end(limited_url):
    url = limited_url
    blocker = Blocker(url, "c")
    job = {"endpoint": "/v1/chat/completions", "body": {"messages": MSG, "max_tokens": 2}}
    ids = [httpx.post(f"{url}/v1/jobs", json=job, headers=auth("a")).json()["id"] for _ in range(2)]
    r = httpx.post(f"{url}/v1/jobs", json=job, headers=auth("a"))
    assert r.status_code == 429 and r.headers["retry-after"] == "3"
    assert httpx.post(f"{url}/v1/jobs", json=job, headers=auth("b")).status_code == 202
    for job_id in ids:
        httpx.post(f"{url}/v1/jobs/{job_id}/cancel", headers=auth("a"))
    assert httpx.post(f"{url}/v1/jobs", json=job, headers=auth("a")).status_code == 202
    blocker.cancel()


def test_stream_waiting_in_the_queue_gets_keepalives(limited_url):
    url = limited_url
    blocker = Blocker(url, "c")
    body = {"messages": MSG, "max_tokens": 4, "temperature": 0, "stream": True}
    lines = []
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=auth("a"), timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            lines.append(line)
            if line == ": keep-alive" and lines.count(line) == 2:
                blocker.cancel()  # now the request runs
    data = [i for i, line in enumerate(lines) if line.startswith("data: {")]
    assert '"role":"assistant"' in lines[data[0]]  # the role chunk comes at once
    assert data[0] < lines.index(": keep-alive") < data[1] and lines[-2:] == ["data: [DONE]", ""]

    blocker = Blocker(url, "c")  # the official client skips the comments
    threading.Timer(0.5, blocker.cancel).start()
    chunks = list(client(url, "a").chat.completions.create(model=_model(url), messages=MSG, max_tokens=4,
                                                          temperature=0, stream=True))
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def _model(url: str) -> str:
    return httpx.get(f"{url}/v1/models", headers=auth("a")).json()["data"][0]["id"]


@pytest.mark.parametrize("path,body,param", [
    ("/v1/chat/completions", {"messages": MSG, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ("/v1/chat/completions", {"messages": MSG, "stop": "x" * 300}, "stop"),
    ("/v1/chat/completions", {"messages": MSG * 2049}, "messages"),
    ("/v1/completions", {"prompt": "x" * ((1 << 20) + 1)}, "prompt"),
    ("/v1/embeddings", {"input": ["a"] * 2049}, "input"),
    ("/v1/translations", {"input": "Hallo", "target_language": ""}, "target_language"),
])
def test_field_caps_are_400_naming_the_field(limited_url, path, body, param):
    r = httpx.post(limited_url + path, json=body, headers=auth("a"))
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def _raw(url: str, head: bytes, body_chunks, timeout: float = 10) -> bytes:
    """Send a request by hand; returns what the server answered before we sent the rest."""
    u = urlparse(url)
    with socket.create_connection((u.hostname, u.port), timeout=timeout) as s:
        s.sendall(head)
        for chunk in body_chunks:
            s.sendall(chunk)
        return s.recv(65536)


def test_upload_refused_past_the_limit_without_reading_the_rest(limited_url):
    boundary = b"xyzzy"
    start = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--' + boundary
             + b'\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n\r\n')
    head = (b"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: multipart/form-data; boundary=" + boundary + b"\r\n\r\n")

    def chunked(data: bytes) -> bytes:
        return b"%x\r\n" % len(data) + data + b"\r\n"

    # 96 KB of a file whose limit is 64 KB, and the body never ends: the answer cannot wait for its end
    answer = _raw(limited_url, head, [chunked(start)] + [chunked(b"x" * 8192) for _ in range(12)])
    assert answer.startswith(b"HTTP/1.1 413") and b"file_too_large" in answer
    declared = (b"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\r\nContent-Length: 99999999\r\n"
                b"Content-Type: multipart/form-data; boundary=" + boundary + b"\r\n\r\n")
    assert _raw(limited_url, declared, []).startswith(b"HTTP/1.1 413")  # refused on its declared length
    c = client(limited_url, "a")
    f = c.files.create(file=("ok.jsonl", jsonl([chat_line("r1", "m", "hi")] * 3)), purpose="batch")
    assert f.bytes > 0 and c.files.content(f.id).content.count(b"\n") == 3


def test_max_tokens_beyond_the_context_is_clamped(tiny_model_path):
    from engine import Engine
    from jobs.local import LocalBackend

    eng = Engine(tiny_config(tiny_model_path, n_ctx=128, n_parallel=1))
    backend = LocalBackend(eng)
    try:
        with live_server(create_app(backend)) as url:
            r = client(url).chat.completions.create(model=eng.model_name, messages=MSG, max_tokens=1_000_000,
                                                   temperature=0, logit_bias=NO_EOS)
    finally:
        backend.close()
        eng.close()
    assert r.choices[0].finish_reason == "length"
    assert 100 < r.usage.prompt_tokens + r.usage.completion_tokens <= 128


# ------------------------------------------------------------------ isolation over Redis


@pytest.fixture(scope="module")
def redis_app(redis_server, tiny_model_path, tmp_path_factory):
    from jobs.remote import RedisBackend

    url = redis_server.url.rsplit("/", 1)[0] + "/5"  # a database of its own
    redis.Redis.from_url(url).flushdb()
    w = start_worker(url, tiny_model_path, parallel=4, log_dir=tmp_path_factory.mktemp("limits-worker"))
    w.wait_ready()
    app = create_app(RedisBackend(url), store=RedisStore(url), config=ApiConfig(api_keys=["alice", "mallory"]))
    try:
        with live_server(app) as base:
            yield base
    finally:
        w.stop()


def test_another_key_cannot_touch_jobs_files_or_batches(redis_app):
    url = redis_app
    alice, mallory = client(url, "alice"), client(url, "mallory")
    model = alice.models.list().data[0].id
    f = alice.files.create(file=("in.jsonl", jsonl([chat_line(f"r{i}", model, "hi", max_tokens=2)
                                                    for i in range(3)])), purpose="batch")
    b = alice.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    job = httpx.post(f"{url}/v1/jobs", headers=auth("alice"), json={
        "endpoint": "/v1/completions", "body": {"prompt": "x", "max_tokens": 2}}).json()["id"]
    b, _ = wait_batch(alice, b.id)
    assert b.status == "completed"

    def status(method: str, path: str, key: str = "mallory") -> int:
        return httpx.request(method, url + path, headers=auth(key)).status_code

    for method, path in [("GET", f"/v1/jobs/{job}"), ("POST", f"/v1/jobs/{job}/cancel"),
                         ("GET", f"/v1/files/{f.id}"), ("GET", f"/v1/files/{f.id}/content"),
                         ("DELETE", f"/v1/files/{f.id}"), ("GET", f"/v1/batches/{b.id}"),
                         ("POST", f"/v1/batches/{b.id}/cancel"), ("GET", f"/v1/files/{b.output_file_id}/content")]:
        assert status(method, path) == 404, (method, path)
    assert job not in [j["id"] for j in httpx.get(f"{url}/v1/jobs", headers=auth("mallory")).json()["data"]]
    assert mallory.files.list().data == [] and mallory.batches.list().data == []
    # all still there for their owner
    assert status("GET", f"/v1/jobs/{job}", "alice") == 200
    assert job in [j["id"] for j in httpx.get(f"{url}/v1/jobs", headers=auth("alice")).json()["data"]]
    assert len(read_lines(alice, b.output_file_id)) == 3 and alice.files.content(f.id).content
    with pytest.raises(openai.NotFoundError):
        mallory.files.content(b.output_file_id)


def test_a_silent_redis_does_not_freeze_the_api():
    """Redis calls run off the event loop: with Redis accepting connections and never
    answering, a request waiting on it does not hold up one that needs no Redis."""
    from jobs.remote import RedisBackend

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
    app = create_app(RedisBackend(url), store=RedisStore(url), config=ApiConfig(api_keys=["a"]))
    try:
        with live_server(app) as base:
            def wait_on_redis():
                with pytest.raises(httpx.TimeoutException):
                    httpx.get(f"{base}/v1/files/file-x", headers=auth("a"), timeout=5)

            stuck = threading.Thread(target=wait_on_redis, daemon=True)
            stuck.start()
            time.sleep(0.5)  # it is waiting on Redis now
            t = time.monotonic()
            assert httpx.get(f"{base}/openapi.json", timeout=4).status_code == 200
            assert time.monotonic() - t < 2
    except httpx.TimeoutException:
        pytest.fail("the API froze while a request waited on Redis")
    finally:
        silent.close()
