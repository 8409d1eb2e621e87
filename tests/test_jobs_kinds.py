"""Job kinds: validation of OpenAI bodies (errors name the field) and runs on
the tiny model; LocalBackend (the in-process jobs interface)."""

from __future__ import annotations

import base64
import time

import pytest

from jobs import kinds
from jobs.errors import JobValidationError, ModelNotFound
from jobs.local import LocalBackend

MSG = [{"role": "user", "content": "Hello there"}]


@pytest.mark.parametrize("kind,body,param", [
    ("chat", {}, "messages"),
    ("chat", {"messages": []}, "messages"),
    ("chat", {"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
    ("chat", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages.0.content.0"),
    ("chat", {"messages": MSG, "max_tokens": "10"}, "max_tokens"),
    ("chat", {"messages": MSG, "max_completion_tokens": 0}, "max_completion_tokens"),
    ("chat", {"messages": MSG, "temperature": True}, "temperature"),
    ("chat", {"messages": MSG, "top_p": 1.5}, "top_p"),
    ("chat", {"messages": MSG, "n": 17}, "n"),
    ("chat", {"messages": MSG, "stop": [1]}, "stop.0"),
    ("chat", {"messages": MSG, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ("chat", {"messages": MSG, "stop": "x" * 257}, "stop"),
    ("chat", {"messages": MSG, "seed": 1.5}, "seed"),
    ("chat", {"messages": MSG, "logit_bias": {"abc": 1}}, "logit_bias.abc"),
    ("chat", {"messages": MSG, "logit_bias": {"5": 500}}, "logit_bias.5"),
    ("chat", {"messages": MSG, "response_format": {"type": "xml"}}, "response_format.type"),
    ("chat", {"messages": MSG, "response_format": {"type": "json_schema", "json_schema": "x"}},
     "response_format.json_schema"),
    ("chat", {"messages": MSG, "json_schema": {"type": "object"}, "grammar": "root ::= \"a\""}, "grammar"),
    ("chat", {"messages": MSG, "response_format": {"type": "json_object"}, "grammar": "root ::= \"a\""},
     "grammar"),
    ("chat", {"messages": MSG, "top_k": -1}, "top_k"),
    ("chat", {"messages": MSG, "cache_prompt": "yes"}, "cache_prompt"),
    ("chat", {"messages": MSG, "stream_options": []}, "stream_options"),
    ("completion", {"prompt": 5}, "prompt"),
    ("completion", {"prompt": ""}, "prompt"),
    ("completion", {"prompt": "a", "best_of": 3}, "best_of"),
    ("embedding", {"input": []}, "input"),
    ("embedding", {"input": "a", "encoding_format": "hex"}, "encoding_format"),
    ("translation", {"input": "Hallo"}, "target_language"),
    ("translation", {"input": ["a", 3], "target_language": "French"}, "input.1"),
    ("translation", {"input": "", "target_language": ""}, "target_language"),
    ("embedding", {"input": ["a"] * 2049}, "input"),
    ("chat", {"messages": MSG * 2049}, "messages"),
    ("completion", {"prompt": "x" * ((1 << 20) + 1)}, "prompt"),
    ("translation", {"input": "a", "target_language": "French", "glossary": ["x"]}, "glossary"),
    ("image", {}, "kind"),
])
def test_bad_bodies_name_the_field(kind, body, param):
    with pytest.raises(JobValidationError) as e:
        kinds.validate(kind, body)
    assert e.value.param == param
    assert e.value.to_dict()["type"] == "invalid_request_error"


def test_validate_normalises_and_ignores_unknown_fields():
    body = kinds.validate("chat", {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
        "max_completion_tokens": 7, "stop": "END", "logit_bias": {"12": 3}, "whatever": {"x": 1}, "user": "u"})
    assert body["messages"] == [{"role": "user", "content": "ab"}]
    assert (body["max_tokens"], body["stop"], body["logit_bias"]) == (7, ["END"], {"12": 3.0})
    assert "whatever" not in body and "user" not in body
    assert kinds.validate("chat", body) == body  # idempotent
    assert kinds.validate("completion", {"prompt": [1, 2, 3]})["prompt"] == [[1, 2, 3]]


def test_chat_and_completion_bodies(tiny_engine):
    r = kinds.run(tiny_engine, "chat", {"messages": MSG, "max_tokens": 5, "temperature": 0})
    assert r["object"] == "chat.completion" and r["model"] == tiny_engine.model_name
    choice = r["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "length"
    u = r["usage"]
    assert u["completion_tokens"] == 5 and u["total_tokens"] == u["prompt_tokens"] + 5
    assert "cached_tokens" in u["prompt_tokens_details"]
    again = kinds.run(tiny_engine, "chat", {"messages": MSG, "max_tokens": 5, "temperature": 0})
    assert again["choices"][0]["message"]["content"] == choice["message"]["content"]
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] > 0  # the prompt was cached

    c = kinds.run(tiny_engine, "completion", {"prompt": ["one two", "three"], "max_tokens": 3, "echo": True})
    assert c["object"] == "text_completion" and [ch["index"] for ch in c["choices"]] == [0, 1]
    assert c["choices"][0]["text"].startswith("one two") and c["usage"]["completion_tokens"] == 6


def test_stop_and_streaming_deltas(tiny_engine):
    deltas: list = []
    r = kinds.run(tiny_engine, "completion", {"prompt": "a b c", "max_tokens": 12, "temperature": 0},
                  on_delta=lambda d, i: deltas.append((i, d)))
    text = r["choices"][0]["text"]
    assert "".join(d for _, d in deltas) == text and {i for i, _ in deltas} == {0}
    stop = text[len(text) // 2 :][:3]
    if stop.strip():
        r2 = kinds.run(tiny_engine, "completion", {"prompt": "a b c", "max_tokens": 12, "temperature": 0,
                                                   "stop": stop})
        assert stop not in r2["choices"][0]["text"] and r2["choices"][0]["finish_reason"] == "stop"


def test_embeddings_float_and_base64(tiny_engine):
    import numpy as np

    f = kinds.run(tiny_engine, "embedding", {"input": ["alpha", "beta"]})
    assert f["object"] == "list" and [d["index"] for d in f["data"]] == [0, 1]
    assert f["usage"]["prompt_tokens"] > 0
    b = kinds.run(tiny_engine, "embedding", {"input": ["alpha", "beta"], "encoding_format": "base64"})
    vec = np.frombuffer(base64.b64decode(b["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(vec, f["data"][0]["embedding"], atol=1e-6)
    short = kinds.run(tiny_engine, "embedding", {"input": ["alpha", "beta"], "dimensions": 3})["data"][0]["embedding"]
    assert len(short) == 3 and np.isclose(np.linalg.norm(short), 1.0)  # truncated, renormalised
    assert np.allclose(np.array(short) * np.linalg.norm(f["data"][0]["embedding"][:3]), f["data"][0]["embedding"][:3],
                       atol=1e-6)
    whole = kinds.run(tiny_engine, "embedding", {"input": "alpha", "dimensions": 1 << 20})["data"][0]["embedding"]
    assert np.allclose(whole, f["data"][0]["embedding"], atol=1e-6)


def test_structured_output_json_object(tiny_engine):
    import json

    r = kinds.run(tiny_engine, "chat", {"messages": MSG, "max_tokens": 40, "temperature": 0,
                                        "response_format": {"type": "json_object"}})
    content = r["choices"][0]["message"]["content"]
    if r["choices"][0]["finish_reason"] == "stop":
        assert isinstance(json.loads(content), dict)
    else:  # cut off: still a prefix the json_object grammar accepts
        from engine.grammar import compile_constraint, make_tokenizer
        from engine.types import Constraint

        m = compile_constraint(Constraint("json_object"), make_tokenizer(tiny_engine.model.ptr)).matcher()
        for t in tiny_engine.tokenize(content, add_special=False):
            assert m.accepts(t), content
            m.consume(t)


def test_translation_keeps_input_order(tiny_engine):
    r = kinds.run(tiny_engine, "translation", {"input": ["Guten Morgen", "Danke", "Bis bald"],
                                               "target_language": "English", "max_tokens": 4})
    assert [d["index"] for d in r["data"]] == [0, 1, 2] and r["usage"]["completion_tokens"] <= 12
    alone = [kinds.run(tiny_engine, "translation", {"input": x, "target_language": "English", "max_tokens": 4})
             ["data"][0]["text"] for x in ["Guten Morgen", "Danke", "Bis bald"]]
    assert [d["text"] for d in r["data"]] == alone and len(set(alone)) > 1  # each output is its input's


# ---------------------------------------------------------------- LocalBackend


@pytest.fixture
def local(tiny_engine):
    b = LocalBackend(tiny_engine, threads=4)
    yield b
    b.close()


def test_local_backend_submit_wait_events(local, tiny_engine):
    assert local.models() == [tiny_engine.model_name]
    rec = local.submit("chat", {"messages": MSG, "max_tokens": 6, "temperature": 0}, stream=True)
    events = list(local.events(rec.id))
    final = events[-1]["record"]
    assert final.status == "succeeded" and final.attempts == 1
    assert "".join(e["delta"] for e in events[:-1]) == final.result["choices"][0]["message"]["content"]
    with pytest.raises(ModelNotFound):
        local.submit("chat", {"messages": MSG, "model": "other-model"})
    with pytest.raises(JobValidationError):
        local.submit("chat", {"messages": MSG, "top_p": "high"})


def test_local_backend_batch_with_a_bad_line_and_cancel(local):
    items = [("completion", {"prompt": f"p{i}", "max_tokens": 4}) for i in range(6)]
    items[2] = ("completion", {"prompt": 7})
    ids = local.submit_many(items, batch_id="b")
    recs = [local.wait(j, timeout=60) for j in ids]
    assert [r.status for r in recs] == ["succeeded"] * 2 + ["failed"] + ["succeeded"] * 3
    assert recs[2].error["param"] == "prompt"
    assert local.batch_counts("b")["succeeded"] == 5

    long = [local.submit("completion", {"prompt": f"long {i}", "max_tokens": 3000}) for i in range(6)]
    queued = long[-1].id  # 4 threads: the last two wait
    assert local.cancel(queued) and local.get(queued).status == "cancelled"
    deadline = time.monotonic() + 30
    while local.get(long[0].id).status != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    for r in long[:-1]:
        assert local.cancel(r.id)
    done = [local.wait(r.id, timeout=30) for r in long]
    assert {r.status for r in done} == {"cancelled"}
    assert local.get(queued).started_at is None
    assert done[0].result["usage"]["completion_tokens"] < 3000
