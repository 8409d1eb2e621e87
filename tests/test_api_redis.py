"""The API over Redis: a real redis-server, a real `llamaq worker` process on
the tiny model, two API apps sharing files and batches through Redis, and the
official openai client and raw httpx requests, the refused ones included."""

from __future__ import annotations

import json
import time

import httpx
import openai
import orjson
import pytest
import redis

from api import ApiConfig, RedisStore, create_app
from redis_fixtures import start_worker
from test_api_support import chat_line, client, jsonl, live_server, read_lines, wait_batch

MSG = [{"role": "user", "content": "Say something about rivers."}]


@pytest.fixture(scope="module")
def url(redis_server):
    redis.Redis.from_url(redis_server.url).flushall()
    return redis_server.url


@pytest.fixture(scope="module")
def worker(url, tiny_model_path, tmp_path_factory):
    w = start_worker(url, tiny_model_path, parallel=8, log_dir=tmp_path_factory.mktemp("worker-logs"))
    w.wait_ready()
    yield w
    w.stop()


def _app(url: str, **config):
    from jobs.remote import RedisBackend

    return create_app(RedisBackend(url), store=RedisStore(url), config=ApiConfig(**config))


@pytest.fixture(scope="module")
def base_url(url, worker):
    with live_server(_app(url)) as base:
        yield base


@pytest.fixture(scope="module")
def oai(base_url):
    return client(base_url)


@pytest.fixture(scope="module")
def model(oai, tiny_model_path):
    models = [m.id for m in oai.models.list().data]
    assert models == [tiny_model_path.stem]
    return models[0]


def test_chat_stream_and_embeddings_through_a_worker(oai, model):
    r = oai.chat.completions.create(model=model, messages=MSG, max_tokens=6, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length") and r.usage.completion_tokens <= 6
    chunks = list(oai.chat.completions.create(model=model, messages=MSG, max_tokens=6, temperature=0, stream=True,
                                              stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == r.choices[0].message.content  # f32 tiny model: greedy output is batch-invariant
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens
    e = oai.embeddings.create(model=model, input=["one", "two", "three"])
    assert [d.index for d in e.data] == [0, 1, 2]


def test_errors_through_redis(oai, model):
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="no-such-model", messages=MSG)
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model=model, messages=MSG, top_p="high")
    assert e.value.body["param"] == "top_p"


def test_batch_shared_by_two_api_processes(oai, model, url, worker):
    lines = [chat_line(f"r{i}", model, f"Topic {i}", max_tokens=3) for i in range(12)]
    bad = chat_line("bad", model, "x", max_tokens=-1)
    f = oai.files.create(file=("in.jsonl", jsonl(lines + [bad])), purpose="batch")
    b = oai.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    with live_server(_app(url)) as other_url:  # another API process: same files and batches
        other = client(other_url)
        assert other.files.retrieve(f.id).bytes == f.bytes
        b, seen = wait_batch(other, b.id)
    assert b.status == "completed" and seen[-1] == "completed"
    assert (b.request_counts.total, b.request_counts.completed, b.request_counts.failed) == (13, 12, 1)
    out = read_lines(oai, b.output_file_id)
    assert sorted(line["custom_id"] for line in out) == sorted(f"r{i}" for i in range(12))
    assert all(line["response"]["body"]["choices"][0]["message"]["role"] == "assistant" for line in out)
    errors = read_lines(oai, b.error_file_id)
    assert [e["custom_id"] for e in errors] == ["bad"] and "max_tokens" in errors[0]["error"]["message"]


def test_batch_cancel_through_redis(oai, model):
    lines = [chat_line(f"c{i}", model, f"Story {i}", max_tokens=200) for i in range(80)]
    f = oai.files.create(file=("c.jsonl", jsonl(lines)), purpose="batch")
    b = oai.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    wait_batch(oai, b.id, until=("in_progress",))
    cancelling_at = oai.batches.cancel(b.id).cancelling_at
    assert cancelling_at and oai.batches.retrieve(b.id).cancelling_at == cancelling_at
    b, _ = wait_batch(oai, b.id)
    assert b.status == "cancelled" and b.cancelling_at == cancelling_at
    assert b.request_counts.completed < 80 and b.request_counts.completed + b.request_counts.failed == 80


def test_jobs_shortcut_and_health_metrics(base_url, model):
    r = httpx.post(f"{base_url}/v1/jobs", json={"endpoint": "/v1/completions",
                                                "body": {"model": model, "prompt": "Hi", "max_tokens": 3}})
    assert r.status_code == 202
    job_id = r.json()["id"]
    deadline = time.monotonic() + 60
    while (job := httpx.get(f"{base_url}/v1/jobs/{job_id}").json())["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert job["status"] == "succeeded" and job["worker"] and job["result"]["object"] == "text_completion"
    h = httpx.get(f"{base_url}/health").json()
    assert h["status"] == "ok" and h["workers"] == 1
    text = httpx.get(f"{base_url}/metrics").text
    assert "llamaq_queue_depth{model=" in text and "llamaq_backend_up 1" in text


def test_stream_disconnect_cancels_remote_job(base_url, model):
    body = {"model": model, "messages": MSG, "max_tokens": 3000, "temperature": 1, "stream": True}
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        first = [next(lines) for _ in range(4)]
    job_id = orjson.loads(first[0][6:])["id"].removeprefix("chatcmpl-")
    rec = _wait_terminal(base_url, job_id)
    assert rec["status"] == "cancelled"


def _wait_terminal(base_url: str, job_id: str) -> dict:
    deadline = time.monotonic() + 60
    while True:
        rec = httpx.get(f"{base_url}/v1/jobs/{job_id}").json()
        if rec.get("status") in ("succeeded", "failed", "cancelled"):
            return rec
        assert time.monotonic() < deadline, rec
        time.sleep(0.1)


def test_no_worker_is_503(url, tmp_path):
    from jobs.remote import RedisBackend
    from jobs.settings import Settings

    backend = RedisBackend(url, settings=Settings(redis_url=url, prefix="llamaq-empty"))
    app = create_app(backend, store=RedisStore(url, prefix="llamaq-empty:api:"))
    with live_server(app) as base:
        c = client(base)
        with pytest.raises(openai.APIStatusError) as e:
            c.chat.completions.create(model="anything", messages=MSG)
        assert e.value.status_code == 503 and e.value.response.headers.get("retry-after")
        assert httpx.get(f"{base}/health").status_code == 503


def test_open_batch_is_adopted_by_another_api_process(url, worker, model):
    from api.batches import BatchLimits
    from jobs.remote import RedisBackend

    lines = [chat_line(f"a{i}", model, f"Tale {i}", max_tokens=40) for i in range(40)]
    with live_server(_app(url)) as first_url:
        c = client(first_url)
        f = c.files.create(file=("a.jsonl", jsonl(lines)), purpose="batch")
        b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        wait_batch(c, b.id, until=("in_progress",))
    # the first API process is gone with the batch still open; the next one takes it over
    assert RedisStore(url).get_batch(b.id)["status"] == "in_progress"
    app = create_app(RedisBackend(url), store=RedisStore(url), batch_limits=BatchLimits(lease_s=1))
    with live_server(app) as second_url:
        b, _ = wait_batch(client(second_url), b.id)
        assert b.status == "completed" and b.request_counts.completed == 40
        out = read_lines(client(second_url), b.output_file_id)
        assert sorted(line["custom_id"] for line in out) == sorted(f"a{i}" for i in range(40))


def test_a_job_message_that_cannot_be_published_is_a_503(tmp_path):
    """Redis gone between a job's record and its message: Celery raises kombu's
    OperationalError, which is the same outage as redis-py's ConnectionError
    (503, retry), not an internal error (500)."""
    from api.errors import from_exception
    from jobs.remote import RedisBackend
    from jobs.tasks import send_jobs
    from redis_fixtures import RedisServer

    server = RedisServer(tmp_path / "redis")
    server.start()
    backend = RedisBackend(server.url)
    try:
        send_jobs(backend.celery, ["job_a"], "m", "interactive")  # the producer's connection is open
        server.stop(kill=True)
        with pytest.raises(Exception) as e:
            send_jobs(backend.celery, ["job_b"], "m", "interactive")
        err = from_exception(e.value)
        assert err is not None and (err.status, err.code) == (503, "backend_unavailable"), e.value
        assert err.headers.get("Retry-After")
    finally:
        backend.close()
        server.stop()


# ------------------------------------------------------------------ what OpenAI refuses, as it refuses it


def _error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


def test_cancelling_a_finished_batch_is_a_409(oai, model):
    f = oai.files.create(file=("done.jsonl", jsonl([chat_line("a", model, "hi", max_tokens=2)])), purpose="batch")
    b = oai.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    b, _ = wait_batch(oai, b.id, timeout=60)
    assert b.status == "completed"
    with pytest.raises(openai.ConflictError) as e:
        oai.batches.cancel(b.id)
    assert "completed" in e.value.body["message"] and e.value.body["type"] == "invalid_request_error"
    assert oai.batches.retrieve(b.id).status == "completed"


def test_a_batch_line_for_a_model_nobody_serves_fails_alone(oai, model):
    """Queued, such a line waited for a worker that never comes: the batch stayed
    in_progress for its whole completion window."""
    lines = [chat_line("good", model, "hi", max_tokens=2), chat_line("lost", "no-such-model", "hi", max_tokens=2)]
    f = oai.files.create(file=("models.jsonl", jsonl(lines)), purpose="batch")
    b = oai.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    b, _ = wait_batch(oai, b.id, timeout=60)
    assert b.status == "completed" and (b.request_counts.completed, b.request_counts.failed) == (1, 1)
    [err] = read_lines(oai, b.error_file_id)
    assert err["custom_id"] == "lost" and err["response"]["status_code"] == 404
    assert err["response"]["body"]["error"]["code"] == "model_not_found" and err["error"]["code"] == "model_not_found"
    assert [line["custom_id"] for line in read_lines(oai, b.output_file_id)] == ["good"]


def test_a_body_declared_as_another_media_type_is_a_415(base_url, model):
    body = orjson.dumps({"model": model, "messages": MSG, "max_tokens": 2})
    for ctype in ("text/plain", "multipart/form-data; boundary=x", "application/xml"):
        r = httpx.post(f"{base_url}/v1/chat/completions", content=body, headers={"content-type": ctype})
        assert _error(r, 415)["code"] == "unsupported_media_type"
    curl_d = httpx.post(f"{base_url}/v1/chat/completions", content=body, timeout=60,  # what `curl -d` sends
                        headers={"content-type": "application/x-www-form-urlencoded"})
    assert curl_d.status_code == 200 and curl_d.json()["object"] == "chat.completion"
    r = httpx.post(f"{base_url}/v1/files", json={"purpose": "batch"})  # an upload is a form: 400 names it
    assert _error(r, 400)["param"] == "file"
    undeclared = httpx.post(f"{base_url}/v1/chat/completions", content=body, timeout=60)
    assert undeclared.status_code == 200 and undeclared.json()["object"] == "chat.completion"
    charset = httpx.post(f"{base_url}/v1/chat/completions", content=body, timeout=60,
                         headers={"content-type": "application/json; charset=utf-8"})
    assert charset.status_code == 200


def test_an_empty_upload_is_kept_and_its_batch_fails_as_empty(oai):
    """Its content key was never written: renaming it into place was a 500."""
    f = oai.files.create(file=("empty.jsonl", b""), purpose="batch")
    assert f.bytes == 0 and oai.files.content(f.id).content == b""
    b = oai.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    b, _ = wait_batch(oai, b.id, timeout=60)
    assert b.status == "failed" and b.errors.data[0].code == "empty_file"


def test_a_prompt_over_the_context_names_the_field_it_came_from(oai, model):
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "word " * 9000}], max_tokens=2)
    assert e.value.body["code"] == "context_length_exceeded" and e.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as e:
        oai.embeddings.create(model=model, input="word " * 9000)
    assert e.value.body["code"] == "context_length_exceeded" and e.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError) as e:
        oai.completions.create(model=model, prompt="word " * 9000, max_tokens=2)
    assert e.value.body["param"] == "prompt"


def test_a_list_over_its_limit_is_named_in_a_short_message(base_url, model):
    """2,049 strings also failed the token-id branches item by item: the message
    listed each item (79 kB) and not the limit."""
    for path, body, limit in [("/v1/embeddings", {"model": model, "input": ["a"] * 2049}, 2048),
                              ("/v1/completions", {"model": model, "prompt": ["a"] * 65}, 64)]:
        err = _error(httpx.post(f"{base_url}{path}", json=body), 400)
        assert f"at most {limit} items" in err["message"] and len(err["message"]) < 200
    err = _error(httpx.post(f"{base_url}/v1/embeddings", json={"model": model, "input": [[-1]] * 100}), 400)
    assert err["param"] == "input" and len(err["message"]) < 400  # token ids out of range: a few named


def test_n_choices_for_chat_and_completions(oai, model):
    one = oai.chat.completions.create(model=model, messages=MSG, max_tokens=4, seed=7)
    three = oai.chat.completions.create(model=model, messages=MSG, max_tokens=4, seed=7, n=3)
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert three.choices[0].message.content == one.choices[0].message.content  # choice j samples with seed + j
    assert len({c.message.content for c in three.choices}) == 3
    assert three.usage.prompt_tokens == one.usage.prompt_tokens  # the prompt counts once, as OpenAI counts it
    chunks = list(oai.chat.completions.create(model=model, messages=MSG, max_tokens=4, seed=7, n=3, stream=True))
    streamed = {}
    for chunk in chunks:
        for c in chunk.choices:
            streamed[c.index] = streamed.get(c.index, "") + (c.delta.content or "")
    assert streamed == {c.index: c.message.content for c in three.choices}
    roles = {c.index: c.delta.role for chunk in chunks for c in chunk.choices if c.delta.role}
    assert roles == {0: "assistant", 1: "assistant", 2: "assistant"}  # each choice opens with its role
    r = oai.completions.create(model=model, prompt=["a", "b"], max_tokens=2, n=2)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model=model, messages=MSG, n=17)
    assert e.value.body["param"] == "n"


def _nested_schema(levels: int) -> dict:
    schema = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


CYCLE = {"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}}
WIDE_GRAMMAR = "root ::= " + " | ".join(f'"w{i}"' for i in range(20000))  # a parser row holds 2,000 items


def test_constraints_that_cannot_run_are_400s_alone_and_in_batches(oai, model):
    """A schema nested 300 deep was a 500 (the job record's JSON writer stops at 254
    levels) and, in a batch, stopped every line of its chunk from being queued; a
    $ref cycle, a grammar no text can start or one past llguidance's parser limits
    failed at the first token as a server error, retried, then a 500 after ~40 s."""
    def rf(schema):
        return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}

    for extra, param in [({"response_format": rf(_nested_schema(300))}, "response_format.json_schema.schema"),
                         ({"response_format": rf(CYCLE)}, "response_format"),
                         ({"extra_body": {"grammar": 'root ::= root "a"'}}, "grammar"),
                         ({"extra_body": {"grammar": WIDE_GRAMMAR}}, "grammar")]:
        with pytest.raises(openai.BadRequestError) as e:
            oai.chat.completions.create(model=model, messages=MSG, max_tokens=2, **extra)
        assert e.value.body["param"] == param
    lines = [json.dumps(chat_line("deep", model, "x", response_format=rf(_nested_schema(300)))).encode(),
             chat_line("cycle", model, "x", response_format=rf(CYCLE)), chat_line("fine", model, "x")]
    f = oai.files.create(file=("constraints.jsonl", jsonl(lines)), purpose="batch")
    b = oai.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    b, _ = wait_batch(oai, b.id, timeout=60)
    assert b.status == "completed" and (b.request_counts.completed, b.request_counts.failed) == (1, 2)
    assert sorted(e["custom_id"] for e in read_lines(oai, b.error_file_id)) == ["cycle", "deep"]


def test_a_chat_only_field_on_completions_is_ignored_as_unknown(oai, model):
    """max_completion_tokens is chat's: on a completion, an unknown field like any
    other; it was read as max_tokens (a 400 naming max_tokens, or a silent limit)."""
    r = oai.completions.create(model=model, prompt="hi", max_tokens=2, extra_body={"max_completion_tokens": "many"})
    assert r.usage.completion_tokens <= 2
