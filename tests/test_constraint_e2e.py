"""Structured output through the engine: the tiny random-weight model (whose text
rarely closes a string, so its output is checked as a valid prefix of the
grammar) and the default model (slow: complete outputs parse and validate)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from engine import Constraint, Request, SamplingParams
from engine.grammar import compile_constraint, make_tokenizer
from jobs.chat import chat_for
from engine.schema import validate_output

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "email": {"type": "string", "format": "email"},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "minItems": 1, "maxItems": 3},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}
SCHEMAS = [
    PERSON,
    {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 9}, "minItems": 2, "maxItems": 4},
    {"type": "object", "properties": {"ok": {"type": "boolean"}, "when": {"type": "string", "format": "date"}},
     "required": ["ok", "when"]},
    {"enum": ["red", "green", "blue"]},
    {"oneOf": [{"type": "object", "properties": {"k": {"const": "a"}, "n": {"type": "integer"}}, "required": ["k", "n"]},
               {"type": "object", "properties": {"k": {"const": "b"}, "s": {"type": "string", "maxLength": 8}},
                "required": ["k", "s"]}]},
]


def check(engine, c: Constraint, r) -> None:
    """A finished constrained result: complete and valid, or cut off, flagged
    incomplete, and still a valid prefix of the grammar."""
    tok = make_tokenizer(engine.model.ptr, engine.model.eog_tokens)
    m = compile_constraint(c, tok).matcher()
    gen = [t for t in r.tokens if t not in tok.eog_ids]
    for t in gen:
        assert m.accepts(t), f"token {t} of {r.text!r} breaks the grammar"
        m.consume(t)
    assert r.incomplete == (not m.is_accepting())
    if r.incomplete:
        assert r.finish_reason == "length", (r.finish_reason, r.text)
    else:
        assert r.finish_reason == "stop"
        assert validate_output(c, r.text) is None, r.text


@pytest.mark.parametrize("schema", SCHEMAS, ids=["person", "digits", "date", "enum", "oneOf"])
def test_tiny_model_schema_outputs(tiny_engine, schema):
    c = Constraint("json_schema", schema)
    for seed in range(3):
        p = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=seed, max_tokens=48, constraint=c)
        check(tiny_engine, c, tiny_engine.submit(Request(f"JSON {seed}:", p)).result(timeout=60))


def test_tiny_model_json_object_and_grammar(tiny_engine):
    for c in (Constraint("json_object"), Constraint("gbnf", 'root ::= ("yes" | "no") " " [0-9]{1,3}')):
        for seed in range(3):
            p = SamplingParams(temperature=1.0, seed=seed, max_tokens=32, constraint=c)
            r = tiny_engine.submit(Request("Answer:", p)).result(timeout=60)
            check(tiny_engine, c, r)
            if c.kind == "json_object" and not r.incomplete:
                assert isinstance(json.loads(r.text), dict)


def test_schema_requests_batched_with_plain_ones(tiny_engine):
    """Eight schema requests and eight plain ones in one batch: every schema output
    is valid, every plain one runs its full length unconstrained, and each result
    is token for token what the same request gives alone (a grammar never leaks
    into other sequences)."""
    plain = [Request(f"Plain request {i}:", SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True))
             for i in range(8)]
    schema_reqs = [Request(f"Schema request {i}:", SamplingParams(
        temperature=0.8, seed=i, max_tokens=40, constraint=Constraint("json_schema", SCHEMAS[i % len(SCHEMAS)])))
        for i in range(8)]
    mixed = [x for pair in zip(schema_reqs, plain) for x in pair]
    alone = [tiny_engine.submit(req).result(timeout=60).tokens for req in mixed]
    with ThreadPoolExecutor(len(mixed)) as ex:
        handles = list(ex.map(tiny_engine.submit, mixed))
    results = [h.result(timeout=120) for h in handles]
    for req, r in zip(mixed, results):
        if req.params.constraint is not None:
            check(tiny_engine, req.params.constraint, r)
        else:
            assert (r.finish_reason, len(r.tokens), r.incomplete) == ("length", 24, False)
    assert [r.tokens for r in results] == alone


def test_tiny_model_output_is_compact(tiny_engine):
    """JSON comes out compact: no whitespace between tokens."""
    c = Constraint("json_schema", {"type": "array", "items": {"enum": ["big", "small"]}, "minItems": 3, "maxItems": 3})
    for seed in range(4):
        p = SamplingParams(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0, seed=seed, max_tokens=24, constraint=c)
        r = tiny_engine.submit(Request(f"Sizes {seed}:", p)).result(timeout=60)
        assert not r.incomplete and r.text == json.dumps(json.loads(r.text), separators=(",", ":")), r.text


def test_bad_schema_fails_at_submit(tiny_engine):
    from engine import InvalidRequest

    c = Constraint("json_schema", {"type": "array", "uniqueItems": True})
    with pytest.raises(InvalidRequest, match="uniqueItems"):
        tiny_engine.submit(Request("x", SamplingParams(constraint=c)))


@pytest.mark.slow
def test_default_model_outputs_validate(default_engine):
    """Chat prompts that ask for the JSON: every output is complete and valid, or
    cut off at max_tokens and flagged."""
    complete = 0
    cases = [(s, f"Reply with a JSON value for this JSON schema: {json.dumps(s)}") for s in SCHEMAS]
    cases.append((None, "Describe a cat as a JSON object."))
    handles = []
    for schema, ask in cases:
        c = Constraint("json_schema", schema) if schema else Constraint("json_object")
        prompt = chat_for(default_engine).render([{"role": "user", "content": ask}])
        p = SamplingParams(temperature=0.0, max_tokens=160, constraint=c)
        handles.append((c, default_engine.submit(Request(prompt, p))))
    for c, h in handles:
        r = h.result(timeout=300)
        check(default_engine, c, r)
        complete += not r.incomplete
    assert complete >= len(cases) - 1  # a 270M model may ramble in a string, rarely
