"""Property-based fuzzing of the live API (a `llamaq serve` subprocess on the
tiny model): random and half-valid bodies, query strings and ids on every
endpoint. Nothing may answer 5xx, errors must be OpenAI-shaped, streams end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redis_fixtures import wait_http_ready
from test_api_support import free_port

ROOT = Path(__file__).resolve().parent.parent
VOCAB = 262144  # the tiny model has the default model's tokenizer

leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                 st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
anything = st.recursive(leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                        max_leaves=8)


def field(good):
    return st.one_of(good, anything)


text = st.text(max_size=30)
token_ids = st.lists(st.integers(0, VOCAB - 1), min_size=0, max_size=6)
message = st.fixed_dictionaries({"role": field(st.sampled_from(["system", "user", "assistant", "developer", "tool"])),
                                 "content": field(text | st.lists(st.fixed_dictionaries(
                                     {"type": st.just("text"), "text": text}), max_size=2))})
sampling = {
    "model": field(st.sampled_from(["tiny-random-v1-f32", "gpt-4o"])),
    "max_tokens": field(st.integers(-2, 4)), "max_completion_tokens": field(st.integers(-2, 4)),
    "temperature": field(st.floats(-1, 3)), "top_p": field(st.floats(-1, 2)), "top_k": field(st.integers(-5, 100)),
    "min_p": field(st.floats(-1, 2)), "seed": field(st.integers()), "n": field(st.integers(0, 3)),
    "stop": field(st.lists(text, max_size=5) | text), "presence_penalty": field(st.floats(-3, 3)),
    "frequency_penalty": field(st.floats(-3, 3)), "repeat_penalty": field(st.floats(-1, 3)),
    "logit_bias": field(st.dictionaries(st.integers(-5, VOCAB + 5).map(str), st.floats(-100, 100), max_size=3)),
    "response_format": field(st.sampled_from([{"type": "json_object"}, {"type": "text"},
                                              {"type": "json_schema", "json_schema": {"name": "x", "schema": {
                                                  "type": "object", "properties": {"a": {"type": "boolean"}}}}}])),
    "json_schema": field(st.just({"type": "object", "properties": {"b": {"enum": [1, 2]}}})),
    "grammar": field(st.sampled_from(['root ::= "yes" | "no"', "root ::= (", ""])),
    "stream": field(st.booleans()), "stream_options": field(st.fixed_dictionaries({"include_usage": st.booleans()})),
    "user": field(text), "cache_prompt": field(st.booleans()), "logprobs": field(st.booleans()),
}
chat_body = st.fixed_dictionaries({"messages": field(st.lists(message, max_size=3))}, optional=sampling)
completion_body = st.fixed_dictionaries(
    {"prompt": field(text | st.lists(text, max_size=3) | st.lists(st.integers(-3, VOCAB + 3), max_size=4))},
    optional={**sampling, "echo": field(st.booleans()), "best_of": field(st.integers(0, 2)), "suffix": field(text)})
embedding_body = st.fixed_dictionaries(
    {"input": field(text | st.lists(text, max_size=3) | token_ids | st.lists(token_ids, max_size=2))},
    optional={"model": sampling["model"], "encoding_format": field(st.sampled_from(["float", "base64", "hex"])),
              "dimensions": field(st.integers(-1, 100))})
translation_body = st.fixed_dictionaries(
    {"input": field(text | st.lists(text, max_size=3)), "target_language": field(st.sampled_from(["French", ""]))},
    optional={"model": sampling["model"], "source_language": field(text), "max_tokens": field(st.integers(1, 4)),
              "glossary": field(st.dictionaries(text, text, max_size=2))})
BODIES = {"/v1/chat/completions": chat_body, "/v1/completions": completion_body, "/v1/embeddings": embedding_body,
          "/v1/translations": translation_body}


def dumps(body) -> bytes:
    return json.dumps(body).encode()  # the stdlib writes integers of any size


def bounded(body):
    """Keep generation short: valid requests run on the model."""
    if isinstance(body, dict):
        for k in ("max_tokens", "max_completion_tokens"):
            v = body.get(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 4:
                body[k] = 4
        if body.get("max_tokens") is None:
            body["max_tokens"] = 3
    return body


@pytest.fixture(scope="module")
def server(tiny_model_path):
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "cli.serve", "--model", str(tiny_model_path), "--port", str(port),
                             "--parallel", "8", "--n-ctx", "4096", "--log-level", "error"], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_http_ready(proc, url)
    with httpx.Client(base_url=url, timeout=60) as c:
        yield c, proc
    proc.terminate()
    proc.wait(timeout=30)


def check(r: httpx.Response, proc) -> None:
    assert proc.poll() is None, "the server died"
    assert r.status_code < 500, (r.request.method, r.request.url, r.request.content[:300], r.text[:500])
    if r.status_code >= 400:
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["message"]
    elif r.headers.get("content-type", "").startswith("text/event-stream"):
        assert r.text.endswith("data: [DONE]\n\n") and '"server_error"' not in r.text, r.text[-500:]


FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])


@FUZZ
@given(endpoint=st.sampled_from(sorted(BODIES)), data=st.data())
def test_openai_endpoints_never_5xx(server, endpoint, data):
    c, proc = server
    body = bounded(data.draw(st.one_of(BODIES[endpoint], anything)))
    check(c.post(endpoint, content=dumps(body)), proc)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=60) | st.text(max_size=40).map(str.encode),
       endpoint=st.sampled_from(["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/jobs",
                                 "/v1/batches", "/v1/translations"]))
def test_raw_bytes_never_5xx(server, raw, endpoint):
    c, proc = server
    check(c.post(endpoint, content=raw, headers={"content-type": "application/json"}), proc)


ids = st.text(min_size=1, max_size=20).map(lambda s: quote(s, safe=""))
query = st.dictionaries(st.sampled_from(["limit", "after", "order", "purpose"]), st.text(max_size=10), max_size=3)


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_ids_queries_files_batches_jobs_never_5xx(server, data):
    c, proc = server
    kind = data.draw(st.sampled_from(["get", "query", "upload", "batch", "job"]))
    if kind == "get":
        path = data.draw(st.sampled_from(["/v1/files/{}", "/v1/files/{}/content", "/v1/batches/{}", "/v1/jobs/{}",
                                          "/v1/models/{}"])).format(data.draw(ids))
        method = data.draw(st.sampled_from(["GET", "DELETE", "POST"]))
        r = c.request(method, path)
        assert r.status_code in (404, 405), (method, path, r.text)
        check(r, proc)
    elif kind == "query":
        path = data.draw(st.sampled_from(["/v1/files", "/v1/batches", "/v1/jobs", "/v1/models"]))
        check(c.get(path, params=data.draw(query)), proc)
    elif kind == "upload":
        purpose = data.draw(st.sampled_from(["batch", "user_data"]) | st.text(max_size=10))
        content = data.draw(st.binary(max_size=200))
        check(c.post("/v1/files", files={"file": ("f.jsonl", content)}, data={"purpose": purpose}), proc)
    elif kind == "batch":
        body = data.draw(st.fixed_dictionaries({}, optional={
            "input_file_id": field(ids), "endpoint": field(st.sampled_from(sorted(BODIES))),
            "completion_window": field(st.sampled_from(["24h", "1h"])),
            "metadata": field(st.dictionaries(text, text, max_size=20))}))
        check(c.post("/v1/batches", content=dumps(body)), proc)
    else:
        body = data.draw(st.fixed_dictionaries({}, optional={
            "endpoint": field(st.sampled_from(sorted(BODIES))), "body": field(chat_body.map(bounded)),
            "priority": field(st.sampled_from(["batch", "interactive"]))}))
        check(c.post("/v1/jobs", content=dumps(body)), proc)


def test_embedding_token_ids_outside_the_vocabulary_are_400(server):
    """Token ids the model does not have must be a 400, never reach llama.cpp."""
    c, proc = server
    r = c.post("/v1/embeddings", json={"input": [VOCAB + 10]})
    check(r, proc)
    assert r.status_code == 400
