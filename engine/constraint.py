"""Structured output: JSON schemas, json_object and GBNF/Lark grammars compiled
into per-sequence token matchers (llguidance).

    tok = make_tokenizer(model_ptr)              # once per model (cached)
    cc = compile_constraint(constraint, tok)     # raises InvalidRequest; cached per schema
    m = cc.matcher()                             # one per sequence
    # engine, per generated token (lazy grammar sampling):
    t = sample(logits)                           # unconstrained sampler chain
    if not m.accepts(t):
        m.mask_logits(logits_view)               # -inf where the grammar forbids
        t = sample(logits_view)
    m.consume(t)
    if m.is_finished(): stop                     # only EOS could follow
    validate_output(constraint, text)            # after generation: None or why not

EOS: the tokenizer knows the model's end-of-generation ids (llama_vocab_is_eog);
a matcher accepts them, and leaves them unmasked, only while is_accepting().

Schemas are rewritten before compiling where that keeps the grammar's language
inside the schema's (see _Rewriter); everything llguidance cannot enforce is
rejected with the keyword and its JSON path. docs/structured-output.md has the
supported subset, measurements and the JSONSchemaBench results.
"""

from __future__ import annotations

import copy
import ctypes
import json
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InvalidRequest
from .types import Constraint

# Whitespace allowed between JSON tokens: compact and pretty-printed output both
# fit, but a model cannot spin in whitespace forever (llguidance's flexible
# default is unbounded).
WHITESPACE_PATTERN = r"(?:\r?\n)?[ \t]{0,48}"

# Formats llguidance enforces.
_LLG_FORMATS = frozenset(
    "date-time time date duration email hostname ipv4 ipv6 uuid uri".split()
)
# Other formats defined by JSON Schema 2020-12 are enforced by _FORMAT_PATTERNS
# or rejected. Formats outside the standard are annotations (validators do not
# assert unknown formats), so they are dropped.
def _uri_reference() -> str:
    """RFC 3986 URI-reference, without bracketed IP-literal hosts (a subset: sound)."""
    pct = r"%[0-9A-Fa-f]{2}"
    pchar = rf"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|{pct})"
    pchar_nc = rf"(?:[A-Za-z0-9\-._~!$&'()*+,;=@]|{pct})"
    authority = (
        rf"(?:(?:[A-Za-z0-9\-._~!$&'()*+,;=:]|{pct})*@)?"
        rf"(?:[A-Za-z0-9\-._~!$&'()*+,;=]|{pct})*(?::[0-9]*)?"
    )
    abempty = rf"(?:/{pchar}*)*"
    absolute = rf"/(?:{pchar}+(?:/{pchar}*)*)?"
    rootless = rf"{pchar}+(?:/{pchar}*)*"
    noscheme = rf"{pchar_nc}+(?:/{pchar}*)*"
    tail = rf"(?:\?(?:{pchar}|[/?])*)?(?:#(?:{pchar}|[/?])*)?"
    uri = rf"[A-Za-z][A-Za-z0-9+.\-]*:(?://{authority}{abempty}|{absolute}|{rootless})?{tail}"
    relative = rf"(?://{authority}{abempty}|{absolute}|{noscheme})?{tail}"
    return rf"^(?:{uri}|{relative})$"


# Formats llguidance lacks, enforced by a pattern describing the format (or a
# subset of it).
_FORMAT_PATTERNS = {
    "json-pointer": r"^(?:/(?:[^~/]|~[01])*)*$",
    "relative-json-pointer": r"^(?:0|[1-9][0-9]*)(?:#|(?:/(?:[^~/]|~[01])*)*)$",
    "uri-reference": _uri_reference(),
}
_STANDARD_FORMATS = _LLG_FORMATS | frozenset(
    "uri-reference iri iri-reference uri-template json-pointer relative-json-pointer"
    " regex idn-email idn-hostname".split()
)

# Why llguidance (and so llamaq) cannot enforce these while generating.
_WHY = {
    "not": "negation cannot be enforced token by token",
    "contains": "array 'contains' cannot be enforced token by token",
    "uniqueItems": "uniqueness of array items cannot be enforced token by token",
    "if": "conditional schemas (if/then/else) are not supported",
    "then": "conditional schemas (if/then/else) are not supported",
    "else": "conditional schemas (if/then/else) are not supported",
    "propertyNames": "'propertyNames' is not supported",
    "unevaluatedProperties": "'unevaluatedProperties' is not supported",
    "unevaluatedItems": "'unevaluatedItems' is not supported",
    "oneOf": "'oneOf' branches that may overlap cannot be enforced "
    "(exactly one must match); use anyOf if overlap is acceptable",
    "minProperties": "'minProperties'/'maxProperties' are supported only when every listed "
    "property is required",
    "maxProperties": "'minProperties'/'maxProperties' are supported only when every listed "
    "property is required",
    "allOf": "this intersection of subschemas is not supported",
    "$ref": "only local references (#/...) are supported",
}

# Keywords whose values are subschemas (so a walk never descends into data
# such as const, enum, default or examples).
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SCHEMA_ONE = (
    "additionalProperties", "additionalItems", "not", "contains", "propertyNames",
    "if", "then", "else", "unevaluatedProperties", "unevaluatedItems",
)


# ---------------------------------------------------------------- tokenizer


@dataclass(frozen=True, eq=False)
class Tokenizer:
    """The model's vocabulary as llguidance sees it, plus its end-of-generation ids."""

    ll: Any  # llguidance.LLTokenizer
    n_vocab: int
    eog_ids: tuple[int, ...]

    def tokenize(self, text: str) -> list[int]:
        """Tokens of text as the model tokenises it (no BOS, no special tokens)."""
        return self.ll.tokenize_str(text)


_tokenizers: dict[tuple, Tokenizer] = {}
_tokenizers_lock = threading.Lock()


def make_tokenizer(model_ptr, eog_ids: list[int] | None = None) -> Tokenizer:
    """Tokenizer for compile_constraint from a llama_model pointer. About 2 s on a
    262k vocabulary, so it is cached per model (a fingerprint of the vocabulary
    guards against a freed pointer reused by another model). eog_ids overrides
    the model's end-of-generation ids (llama_vocab_is_eog)."""
    import llama_cpp

    lib = llama_cpp.llama_cpp._lib
    vocab = lib.llama_model_get_vocab(model_ptr)
    n_vocab = lib.llama_vocab_n_tokens(vocab)
    key = (ctypes.cast(model_ptr, ctypes.c_void_p).value, _vocab_fingerprint(lib, vocab, n_vocab))
    with _tokenizers_lock:
        tok = _tokenizers.get(key)
        if tok is None:
            ids = [t for t in range(n_vocab) if lib.llama_vocab_is_eog(vocab, t)]
            tok = Tokenizer(_ll_tokenizer(lib, vocab, n_vocab, ids), n_vocab, tuple(ids))
            _tokenizers[key] = tok
    if eog_ids is not None and tuple(eog_ids) != tok.eog_ids:
        return Tokenizer(tok.ll, n_vocab, tuple(eog_ids))
    return tok


def _ll_tokenizer(lib, vocab, n_vocab: int, eog_ids: list[int]):
    """llguidance.llamacpp.lltokenizer_from_vocab, calling the C library directly
    (half the time of the Python wrappers)."""
    import llama_cpp
    from llguidance import LLTokenizer

    buf = ctypes.create_string_buffer(4096)
    control = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
    user = llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
    pieces = []
    for t in range(n_vocab):
        n = lib.llama_token_to_piece(vocab, t, buf, 4096, 0, True)
        if n < 0:
            raise ValueError(f"token {t} does not fit a 4096-byte buffer")
        piece = buf.raw[:n]
        attr = lib.llama_token_get_attr(vocab, t)
        # llguidance marks special tokens with a 0xff prefix: grammars never emit them as text.
        if attr & control or (attr & user and piece[:1] == b"<" and piece[-1:] == b">"):
            piece = b"\xff" + piece
        pieces.append(piece)
    fptr = ctypes.cast(lib.llama_tokenize, ctypes.c_void_p).value
    return LLTokenizer.from_llamacpp(
        tokens=pieces, vocab_ptr=vocab, tokenize_fptr=fptr, eos_token=eog_ids or None
    )


def _vocab_fingerprint(lib, vocab, n_vocab: int) -> tuple:
    buf = ctypes.create_string_buffer(256)
    pieces = []
    for t in range(0, n_vocab, max(1, n_vocab // 64)):
        n = lib.llama_token_to_piece(vocab, t, buf, 256, 0, True)
        pieces.append(buf.raw[: max(n, 0)])
    return (n_vocab, hash(tuple(pieces)))


# ---------------------------------------------------------------- matcher


class Matcher:
    """Grammar state of one sequence. Used by the engine thread only."""

    def __init__(self, ll_matcher, tok: Tokenizer):
        self._m = ll_matcher
        self._tok = tok
        self._eog = frozenset(tok.eog_ids)
        self._eog_idx = np.array(tok.eog_ids, dtype=np.int64)
        self._bitmask = np.zeros((tok.n_vocab + 31) // 32, dtype=np.int32)
        self._ended = False

    def accepts(self, token: int) -> bool:
        """Could token come next? No state change."""
        if self._ended:
            return False
        if token in self._eog:
            return self._m.is_accepting()
        return self._m.validate_tokens([token]) == 1

    def consume(self, token: int) -> None:
        if token in self._eog:
            if not self._m.is_accepting():
                raise ValueError("end of generation before the grammar is complete")
            self._ended = True
            return
        if not self._m.consume_token(token):
            raise ValueError(f"token {token} rejected by the grammar: {self._m.get_error()}")

    def mask_logits(self, logits: np.ndarray) -> None:
        """Set logits of every token the grammar forbids now to -inf, in place."""
        self._m.unsafe_compute_mask_ptr(self._bitmask.ctypes.data, self._bitmask.nbytes)
        if self._m.is_error():
            raise ValueError(f"grammar error: {self._m.get_error()}")
        allowed = np.unpackbits(self._bitmask.view(np.uint8), bitorder="little")
        n = min(len(logits), self._tok.n_vocab)
        if len(self._eog_idx):
            allowed[self._eog_idx] = 1 if self.is_accepting() else 0
        np.putmask(logits[:n], allowed[:n] == 0, -np.inf)
        logits[n:] = -np.inf

    def is_finished(self) -> bool:
        """The grammar is complete and nothing but EOS may follow."""
        return self._ended or self._m.is_stopped()

    def is_accepting(self) -> bool:
        """The text so far is a complete match (EOS allowed)."""
        return self._m.is_accepting()


@dataclass(eq=False)
class CompiledConstraint:
    constraint: Constraint
    grammar: str  # llguidance grammar (JSON text)
    tokenizer: Tokenizer
    notes: list[str] = field(default_factory=list)  # rewrites applied (dropped formats, ...)
    _template: Any = None

    def matcher(self) -> Matcher:
        return Matcher(self._template.deep_copy(), self.tokenizer)


# ---------------------------------------------------------------- compile

_CACHE_SIZE = 256
_compiled: OrderedDict[tuple, CompiledConstraint] = OrderedDict()
_compiled_lock = threading.Lock()


def compile_constraint(c: Constraint, tokenizer: Tokenizer) -> CompiledConstraint:
    """Compile c for tokenizer. Raises InvalidRequest (param "response_format" for
    JSON kinds, "grammar" for grammars) naming what is unsupported and where.
    Results are cached by constraint text, so a batch sharing a schema compiles once."""
    key = (id(tokenizer), c.kind, _canonical(c.value))
    with _compiled_lock:
        hit = _compiled.get(key)
        if hit is not None:
            _compiled.move_to_end(key)
            return hit
    cc = _compile(c, tokenizer)
    with _compiled_lock:
        _compiled[key] = cc
        while len(_compiled) > _CACHE_SIZE:
            _compiled.popitem(last=False)
    return cc


def _canonical(value: Any) -> str:
    # Key order matters (it fixes property order in the output): no sort_keys.
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _compile(c: Constraint, tok: Tokenizer) -> CompiledConstraint:
    from llguidance import LLMatcher

    notes: list[str] = []
    schema = None
    if c.kind == "json_object":
        schema = {"type": "object"}
    elif c.kind == "json_schema":
        schema, notes = prepare_schema(c.value)
    elif c.kind in ("gbnf", "lark"):
        grammar = _grammar_text(c)
    else:
        raise InvalidRequest(f"unknown constraint kind {c.kind!r}", param="response_format")
    if schema is not None:
        grammar = LLMatcher.grammar_from_json_schema(
            schema,
            defaults={"whitespace_pattern": WHITESPACE_PATTERN},
            overrides={"lenient": False, "coerce_one_of": False},
        )
    m = LLMatcher(tok.ll, grammar, log_level=0)
    if m.is_error():
        raise _llg_error(m.get_error(), c, schema)
    return CompiledConstraint(c, grammar, tok, notes, m)


def _grammar_text(c: Constraint) -> str:
    from llguidance import LLMatcher
    from llguidance.gbnf_to_lark import any_to_lark

    if not isinstance(c.value, str) or not c.value.strip():
        raise InvalidRequest("grammar must be a non-empty string", param="grammar")
    if c.kind == "lark":
        return LLMatcher.grammar_from_lark(c.value)
    try:
        lark = any_to_lark(c.value)
    except Exception as e:  # the converter raises plain exceptions on bad GBNF
        raise InvalidRequest(f"invalid GBNF grammar: {e}", param="grammar") from None
    return LLMatcher.grammar_from_lark(lark)


def grammar_only_error(has_schema: bool, has_grammar: bool) -> str | None:
    """For the jobs layer: a request may carry a schema or a grammar, not both."""
    if has_schema and has_grammar:
        return "send either a JSON schema (response_format/json_schema) or a grammar, not both"
    return None


# ---------------------------------------------------------------- errors


def _llg_error(msg: str, c: Constraint, schema: Any) -> InvalidRequest:
    """Turn llguidance's error text into one that names the keyword and its path."""
    first = msg.strip().splitlines()[0] if msg.strip() else "unknown error"
    if schema is None:
        name = "GBNF" if c.kind == "gbnf" else "Lark"
        return InvalidRequest(f"invalid {name} grammar: {_tidy(msg)}", param="grammar")
    where = re.search(r"json-schema:///(#[^\s\"']*)", msg)
    base = where.group(1) if where else "#"
    m = re.search(r"Unimplemented keys: \[(.*?)\]", msg)
    if m:
        keys = json.loads(f"[{m.group(1)}]")
        kw = keys[0]
        path = _find_keyword(schema, kw, prefer=base) or base
        return InvalidRequest(
            f'unsupported JSON schema keyword "{kw}" at {path}: {_WHY.get(kw, "not supported")}',
            param="response_format",
        )
    if "oneOf" in first:
        path = _find_keyword(schema, "oneOf", prefer=base) or base
        return InvalidRequest(
            f'unsupported JSON schema keyword "oneOf" at {path}: {_WHY["oneOf"]}',
            param="response_format",
        )
    if "regex" in first.lower():
        path = _bad_pattern(schema)
        if path:
            return InvalidRequest(
                f"unsupported pattern at {path}: {_tidy(msg)} (lookarounds and backreferences "
                "are not supported)",
                param="response_format",
            )
    m = re.search(r"Unknown format: (\S+)", msg)
    if m:
        return InvalidRequest(
            f'unsupported JSON schema format "{m.group(1)}" at {base}', param="response_format"
        )
    return InvalidRequest(
        f"unsupported JSON schema at {base}: {_tidy(msg)}", param="response_format"
    )


def _bad_pattern(schema: Any) -> str | None:
    from llguidance import LLMatcher

    for path, node in _walk(schema, "#"):
        pat = node.get("pattern") if isinstance(node, dict) else None
        if isinstance(pat, str) and LLMatcher.validate_grammar(LLMatcher.grammar_from_regex(pat)):
            return f"{path}/pattern"
    return None


def _tidy(msg: str) -> str:
    lines = [ln.strip() for ln in msg.strip().splitlines() if ln.strip()]
    return "; ".join(lines[:3])[:500]


def _find_keyword(schema: Any, kw: str, prefer: str = "#") -> str | None:
    """JSON pointer (#/...) of the first subschema that uses keyword kw, preferring
    ones at or under `prefer`."""
    found = [p for p, node in _walk(schema, "#") if isinstance(node, dict) and kw in node]
    for p in found:
        if p == prefer or p.startswith(prefer.rstrip("/") + "/"):
            return p
    return found[0] if found else None


def _walk(node: Any, path: str):
    """(path, subschema) for node and every subschema under it."""
    yield path, node
    if not isinstance(node, dict):
        return
    for k in _SCHEMA_MAPS:
        if isinstance(node.get(k), dict):
            for name, sub in node[k].items():
                yield from _walk(sub, f"{path}/{k}/{_ptr(name)}")
    for k in _SCHEMA_LISTS:
        if isinstance(node.get(k), list):
            for i, sub in enumerate(node[k]):
                yield from _walk(sub, f"{path}/{k}/{i}")
    items = node.get("items")
    if isinstance(items, list):
        for i, sub in enumerate(items):
            yield from _walk(sub, f"{path}/items/{i}")
    elif isinstance(items, (dict, bool)):
        yield from _walk(items, f"{path}/items")
    for k in _SCHEMA_ONE:
        if isinstance(node.get(k), (dict, bool)):
            yield from _walk(node[k], f"{path}/{k}")
    deps = node.get("dependencies")
    if isinstance(deps, dict):
        for name, sub in deps.items():
            if isinstance(sub, (dict, bool)):
                yield from _walk(sub, f"{path}/dependencies/{_ptr(name)}")


def _ptr(name: str) -> str:
    return str(name).replace("~", "~0").replace("/", "~1")


# ---------------------------------------------------------------- schema rewrites


def prepare_schema(schema: Any) -> tuple[dict, list[str]]:
    """Check schema and rewrite it for llguidance. Every rewrite keeps the set of
    accepted documents inside what the original schema accepts (or equal to it).
    Returns (rewritten copy, notes on what was rewritten)."""
    if schema is True or schema == {}:
        schema = {}
    if not isinstance(schema, dict):
        raise InvalidRequest("JSON schema must be an object", param="response_format")
    _check_schema(schema)
    for path, node in _walk(schema, "#"):
        ref = node.get("$ref") if isinstance(node, dict) else None
        if isinstance(ref, str) and not ref.startswith("#"):
            raise InvalidRequest(
                f'unsupported JSON schema keyword "$ref" at {path}: {ref!r} is not local; '
                f"{_WHY['$ref']}",
                param="response_format",
            )
    rw = _Rewriter(copy.deepcopy(schema))
    for path, node in list(_walk(rw.root, "#")):
        if isinstance(node, dict):
            rw.rewrite(node, path)
    # The rewrites turn older drafts' idioms into 2020-12 ones (prefixItems, ...).
    rw.root["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return rw.root, rw.notes


def _check_schema(schema: dict) -> None:
    import jsonschema

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as e:
        path = "#" + "".join(f"/{_ptr(p)}" for p in e.absolute_path)
        raise InvalidRequest(
            f"invalid JSON schema at {path}: {e.message}", param="response_format"
        ) from None


class _Rewriter:
    def __init__(self, root: dict):
        self.root = root
        self.notes: list[str] = []

    def rewrite(self, node: dict, path: str) -> None:
        self._format(node, path)
        self._draft4_bounds(node)
        self._tuple_items(node)
        self._no_ops(node, path)
        self._dependencies(node, path)
        self._one_of(node, path)

    def _format(self, node: dict, path: str) -> None:
        fmt = node.get("format")
        if not isinstance(fmt, str) or fmt in _LLG_FORMATS:
            return
        if fmt in _FORMAT_PATTERNS:
            del node["format"]
            pat = _FORMAT_PATTERNS[fmt]
            if "pattern" in node:
                node.setdefault("allOf", []).append({"pattern": pat})
            else:
                node["pattern"] = pat
        elif fmt in _STANDARD_FORMATS:
            raise InvalidRequest(
                f'unsupported JSON schema format "{fmt}" at {path}/format: it cannot be '
                f"enforced while generating (supported: {', '.join(sorted(_LLG_FORMATS | set(_FORMAT_PATTERNS)))})",
                param="response_format",
            )
        else:
            del node["format"]
            self.notes.append(f"{path}/format: non-standard format {fmt!r} is an annotation, not enforced")

    @staticmethod
    def _draft4_bounds(node: dict) -> None:
        # Draft 4: exclusiveMaximum/Minimum are booleans modifying maximum/minimum.
        for ex, bound in (("exclusiveMaximum", "maximum"), ("exclusiveMinimum", "minimum")):
            if isinstance(node.get(ex), bool):
                if node.pop(ex) and bound in node:
                    node[ex] = node.pop(bound)

    @staticmethod
    def _tuple_items(node: dict) -> None:
        # Drafts before 2020-12: "items": [...] is prefixItems, "additionalItems" is items.
        if isinstance(node.get("items"), list):
            node["prefixItems"] = node.pop("items")
            if "additionalItems" in node:
                node["items"] = node.pop("additionalItems")
        else:
            node.pop("additionalItems", None)  # ignored when items is not a list

    def _no_ops(self, node: dict, path: str) -> None:
        if node.get("uniqueItems") is False or (
            "uniqueItems" in node and isinstance(node.get("maxItems"), int) and node["maxItems"] <= 1
        ):
            del node["uniqueItems"]
        if "contains" not in node:
            node.pop("minContains", None)
            node.pop("maxContains", None)
        if "if" in node and "then" not in node and "else" not in node:
            del node["if"]
        for k in ("then", "else"):
            if k in node and "if" not in node:
                del node[k]

    def _dependencies(self, node: dict, path: str) -> None:
        """dependencies / dependentRequired / dependentSchemas as an exact anyOf:
        either the trigger property is absent, or it is present with what it needs."""
        clauses = []
        for kw in ("dependencies", "dependentRequired", "dependentSchemas"):
            deps = node.get(kw)
            if not isinstance(deps, dict):
                continue
            del node[kw]
            for prop, need in deps.items():
                absent = {"properties": {prop: False}}
                if isinstance(need, list):
                    present = {"required": [prop, *need]}
                elif need is True:
                    continue
                else:
                    present = {"allOf": [{"required": [prop]}, need]}
                clauses.append({"anyOf": [absent, present]})
        if clauses:
            node.setdefault("allOf", []).extend(clauses)

    def _one_of(self, node: dict, path: str) -> None:
        branches = node.get("oneOf")
        if not isinstance(branches, list) or len(branches) < 2:
            if isinstance(branches, list):  # one branch: oneOf == that branch
                node["anyOf" if "anyOf" not in node else "allOf"] = node.pop("oneOf")
            return
        for i in range(len(branches)):
            for j in range(i + 1, len(branches)):
                if not self._disjoint(branches[i], branches[j]):
                    return  # left for llguidance, which may prove it or rejects it
        if "anyOf" in node:
            node.setdefault("allOf", []).append({"anyOf": node.pop("oneOf")})
        else:
            node["anyOf"] = node.pop("oneOf")

    # -- disjointness proofs (sound, not complete) --

    def _resolve(self, s: Any, depth: int = 0) -> Any:
        while isinstance(s, dict) and isinstance(s.get("$ref"), str) and depth < 32:
            ref = s["$ref"]
            if not ref.startswith("#"):
                return s
            target = _pointer(self.root, ref[1:])
            if target is None:
                return s
            if len(s) > 1:  # siblings: keep them, intersected with the target
                rest = {k: v for k, v in s.items() if k != "$ref"}
                return {"allOf": [target, rest]}
            s, depth = target, depth + 1
        return s

    def _types(self, s: Any, depth: int = 0) -> frozenset | None:
        """JSON types s can match ("integer" / "fraction" split numbers); None = unknown."""
        s = self._resolve(s)
        if s is False:
            return frozenset()
        if not isinstance(s, dict) or depth > 16:
            return None
        known: frozenset | None = None

        def meet(t):
            nonlocal known
            if t is not None:
                known = t if known is None else known & t

        t = s.get("type")
        if isinstance(t, str):
            t = [t]
        if isinstance(t, list):
            meet(frozenset(x for name in t for x in _TYPE_SETS.get(name, ())))
        if "const" in s:
            meet(frozenset([_type_of(s["const"])]))
        if isinstance(s.get("enum"), list):
            meet(frozenset(_type_of(v) for v in s["enum"]))
        for sub in s.get("allOf", []) if isinstance(s.get("allOf"), list) else []:
            meet(self._types(sub, depth + 1))
        for kw in ("anyOf", "oneOf"):
            if isinstance(s.get(kw), list):
                parts = [self._types(sub, depth + 1) for sub in s[kw]]
                if all(p is not None for p in parts):
                    meet(frozenset().union(*parts))
        return known

    def _values(self, s: Any) -> list | None:
        """The finite set of values s allows (const/enum), else None."""
        s = self._resolve(s)
        if not isinstance(s, dict):
            return None
        if "const" in s:
            return [s["const"]]
        if isinstance(s.get("enum"), list):
            return s["enum"]
        return None

    def _disjoint(self, a: Any, b: Any) -> bool:
        ta, tb = self._types(a), self._types(b)
        if ta is not None and tb is not None and not (ta & tb):
            return True
        va, vb = self._values(a), self._values(b)
        if va is not None and vb is not None and not _overlap(va, vb):
            return True
        return self._disjoint_by_property(a, b)

    def _disjoint_by_property(self, a: Any, b: Any) -> bool:
        """Both object-only, sharing a required property whose values cannot be equal."""
        a, b = self._resolve(a), self._resolve(b)
        if not (isinstance(a, dict) and isinstance(b, dict)):
            return False
        if self._types(a) != frozenset({"object"}) or self._types(b) != frozenset({"object"}):
            return False
        req_a, req_b = set(a.get("required", [])), set(b.get("required", []))
        pa, pb = a.get("properties", {}), b.get("properties", {})
        for k in req_a & req_b:
            if k in pa and k in pb and self._disjoint_value(pa[k], pb[k]):
                return True
        return False

    def _disjoint_value(self, a: Any, b: Any) -> bool:
        ta, tb = self._types(a), self._types(b)
        if ta is not None and tb is not None and not (ta & tb):
            return True
        va, vb = self._values(a), self._values(b)
        return va is not None and vb is not None and not _overlap(va, vb)


_TYPE_SETS = {
    "null": ("null",), "boolean": ("boolean",), "object": ("object",), "array": ("array",),
    "string": ("string",), "integer": ("integer",), "number": ("integer", "fraction"),
}


def _type_of(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer()):
        return "integer"
    if isinstance(v, float):
        return "fraction"
    if isinstance(v, str):
        return "string"
    return "array" if isinstance(v, list) else "object"


def _overlap(xs: list, ys: list) -> bool:
    def key(v):
        t = _type_of(v)
        return (t, float(v)) if t in ("integer", "fraction") else (t, json.dumps(v, sort_keys=True))

    return bool({key(x) for x in xs} & {key(y) for y in ys})


def _pointer(root: Any, ptr: str) -> Any:
    node = root
    for part in ptr.split("/")[1:] if ptr else []:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


# ---------------------------------------------------------------- serialisation


def find_serialization(cc: CompiledConstraint, doc: Any, budget: int = 20000) -> str | None:
    """Compact JSON text of doc that cc's grammar accepts, or None if no order of
    its object keys is accepted (llguidance fixes the order of listed properties).
    For tests and benchmarks: feed known documents through a matcher. Raises
    TimeoutError past `budget` grammar checks."""
    import sys

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))  # continuations nest per key
    return _OrderSearch(cc, budget).find(doc)


def _dumps(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


class _OrderSearch:
    """Depth-first search for a key order of doc that the grammar accepts, on one
    llguidance matcher: each piece of text is consumed as its own token run (the
    grammar judges bytes, so any tokenisation of the same text is judged alike)
    and undone by rollback. Pruning: the grammar state after a set of keys does
    not depend on the order they were emitted in; a key that could come next but
    was passed over must still be able to come next afterwards; a value rejected
    as the next entry stays rejected. These hold for llguidance's object grammar
    (listed properties in schema order, then additional ones in any order)."""

    def __init__(self, cc: CompiledConstraint, budget: int):
        self.m = cc.matcher()._m
        self.tok = cc.tokenizer
        self.budget = budget
        self.text: list[str] = []

    def find(self, doc) -> str | None:
        found = []

        def done():
            if self.m.is_accepting():
                found.append("".join(self.text))
                return True
            return False

        self._emit(doc, done)
        return found[0] if found else None

    def _push(self, s: str) -> int:
        self.budget -= 1
        if self.budget < 0:
            raise TimeoutError("key-order search budget exhausted")
        toks = self.tok.tokenize(s)
        n = self.m.try_consume_tokens(toks)
        if n != len(toks):
            if n:
                self.m.rollback(n)
            return 0
        self.text.append(s)
        return n

    def _pop(self, n: int) -> None:
        self.m.rollback(n)
        self.text.pop()

    def _then(self, s: str, k) -> bool:
        n = self._push(s)
        if not n:
            return False
        r = k()
        self._pop(n)
        return r

    def _emit(self, v, k) -> bool:
        if isinstance(v, dict):
            return self._then("{", lambda: self._obj(v, list(v), True, k, set(), (), set()))
        if isinstance(v, list):
            return self._then("[", lambda: self._arr(v, 0, k))
        return self._then(_dumps(v), k)

    def _arr(self, v, i, k) -> bool:
        if i == len(v):
            return self._then("]", k)
        if i == 0:
            return self._emit(v[0], lambda: self._arr(v, 1, k))
        return self._then(",", lambda: self._emit(v[i], lambda: self._arr(v, i + 1, k)))

    def _obj(self, v, rem, first, k, failed, passed, dead) -> bool:
        done = frozenset(v) - frozenset(rem)
        if done in failed:
            return False
        if not rem:
            ok = self._then("}", k)
        else:
            ok = self._entries(v, rem, first, k, failed, passed, dead)
        if not ok:
            failed.add(done)
        return ok

    def _entries(self, v, rem, first, k, failed, passed, dead) -> bool:
        sep = "" if first else ","
        ready = [key for key in rem if self._then(sep + _dumps(key) + ":", lambda: True)]
        if any(key not in ready for key in passed) or dead & set(rem):
            return False
        for key in ready:
            rest = [x for x in rem if x != key]
            others = tuple(x for x in ready if x != key)
            reached = []

            def after_value(rest=rest, others=others, reached=reached):
                reached.append(True)
                return self._obj(v, rest, False, k, failed, others, dead)

            if self._then(sep + _dumps(key) + ":", lambda key=key, a=after_value: self._emit(v[key], a)):
                return True
            if not reached:
                dead.add(key)
                return False
        return False


# ---------------------------------------------------------------- validation


def validate_output(c: Constraint, text: str) -> str | None:
    """None if text is a complete document satisfying c; else why not. JSON kinds
    are parsed and validated with jsonschema (formats it can check included);
    grammars are checked by the engine's matcher, so only JSON is checked here."""
    if c.kind not in ("json_object", "json_schema"):
        return None
    try:
        doc = json.loads(text)
    except ValueError as e:
        return f"output is not valid JSON: {e}"
    if c.kind == "json_object":
        return None if isinstance(doc, dict) else "output is not a JSON object"
    import jsonschema

    schema = c.value
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    err = jsonschema.exceptions.best_match(
        cls(schema, format_checker=cls.FORMAT_CHECKER).iter_errors(doc)
    )
    if err is None:
        return None
    path = "#" + "".join(f"/{_ptr(p)}" for p in err.absolute_path)
    return f"output does not match the schema at {path}: {err.message}"
