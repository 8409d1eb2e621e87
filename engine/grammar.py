"""Structured output, the grammar side: the model's vocabulary for llguidance,
constraints compiled to llguidance grammars, and per-sequence token matchers.

    tok = make_tokenizer(model_ptr)              # once per model (cached)
    cc = compile_constraint(constraint, tok)     # raises InvalidRequest; cached per schema
    m = cc.matcher()                             # one per sequence
    # engine, per generated token (lazy grammar sampling, engine/constrained.py):
    t = sample(logits)                           # unconstrained sampler chain
    if not m.accepts(t):
        m.mask_logits(logits_view)               # -inf where the grammar forbids
        t = sample(logits_view)
    m.consume(t)
    if m.is_finished(): stop                     # only EOS could follow

EOS: the tokenizer knows the model's end-of-generation ids (llama_vocab_is_eog);
a matcher accepts them, and leaves them unmasked, only while is_accepting().
JSON schemas are checked and rewritten by engine/schema.py first; JSON output
is compact (no whitespace between tokens), as json.dumps(separators=(",", ":")).
"""

from __future__ import annotations

import copy
import ctypes
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InvalidRequest
from .schema import WHY, as_any_of, prepare_schema, walk
from .types import Constraint

# Compact JSON: llguidance's default separators ("," and ":") and no whitespace.
JSON_OPTIONS = {"whitespace_flexible": False}
_COMPILED_PER_TOKENIZER = 256
_TOKENIZERS = 4  # models whose tokenizers stay cached (one is ~2 s to build)


# ---------------------------------------------------------------- tokenizer


@dataclass(frozen=True, eq=False)
class Tokenizer:
    """The model's vocabulary as llguidance sees it, plus its end-of-generation ids.
    Holds the constraints compiled for it, so they go when it goes."""

    ll: Any  # llguidance.LLTokenizer
    n_vocab: int
    eog_ids: tuple[int, ...]
    compiled: OrderedDict = field(default_factory=OrderedDict, repr=False)

    def tokenize(self, text: str) -> list[int]:
        """Tokens of text as the model tokenises it (no BOS, no special tokens)."""
        return self.ll.tokenize_str(text)


_tokenizers: OrderedDict[tuple, Tokenizer] = OrderedDict()
_lock = threading.Lock()


def make_tokenizer(model_ptr, eog_ids: list[int] | None = None) -> Tokenizer:
    """Tokenizer for compile_constraint from a llama_model pointer. About 2 s on a
    262k vocabulary, so the last few are cached, keyed by pointer and a
    fingerprint of the vocabulary (a freed pointer can be reused by another
    model). eog_ids overrides the model's end-of-generation ids."""
    import llama_cpp

    lib = llama_cpp.llama_cpp._lib
    vocab = lib.llama_model_get_vocab(model_ptr)
    n_vocab = lib.llama_vocab_n_tokens(vocab)
    key = (ctypes.cast(model_ptr, ctypes.c_void_p).value, _vocab_fingerprint(lib, vocab, n_vocab),
           None if eog_ids is None else tuple(eog_ids))
    with _lock:
        tok = _tokenizers.get(key)
        if tok is None:
            model_eog = [t for t in range(n_vocab) if lib.llama_vocab_is_eog(vocab, t)]
            same_vocab = next((t for k, t in _tokenizers.items() if k[:2] == key[:2]), None)
            ll = same_vocab.ll if same_vocab else _ll_tokenizer(lib, vocab, n_vocab, model_eog)
            tok = _tokenizers[key] = Tokenizer(ll, n_vocab, tuple(model_eog if eog_ids is None else eog_ids))
        _tokenizers.move_to_end(key)
        while len(_tokenizers) > _TOKENIZERS:
            _tokenizers.popitem(last=False)
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


def compile_constraint(c: Constraint, tokenizer: Tokenizer) -> CompiledConstraint:
    """Compile c for tokenizer. Raises InvalidRequest (param "response_format" for
    JSON kinds, "grammar" for grammars) naming what is unsupported and where.
    Results are cached by constraint text, so a batch sharing a schema compiles once."""
    # Key order matters (it fixes property order in the output): no sort_keys.
    key = (c.kind, c.value if isinstance(c.value, str) else json.dumps(c.value, ensure_ascii=False))
    cache = tokenizer.compiled
    with _lock:
        hit = cache.get(key)
        if hit is not None:
            cache.move_to_end(key)
            return hit
    cc = _compile(c, tokenizer)
    with _lock:
        cache[key] = cc
        while len(cache) > _COMPILED_PER_TOKENIZER:
            cache.popitem(last=False)
    return cc


def _compile(c: Constraint, tok: Tokenizer) -> CompiledConstraint:
    from llguidance import LLMatcher

    if c.kind in ("gbnf", "lark"):
        grammar = _grammar_text(c)
        m = LLMatcher(tok.ll, grammar, log_level=0)
        if m.is_error():
            name = "GBNF" if c.kind == "gbnf" else "Lark"
            raise InvalidRequest(f"invalid {name} grammar: {_tidy(m.get_error())}", param="grammar")
        return CompiledConstraint(c, grammar, tok, [], m)
    if c.kind == "json_object":
        schema, notes = {"type": "object"}, []
    elif c.kind == "json_schema":
        schema, notes = prepare_schema(c.value)
    else:
        raise InvalidRequest(f"unknown constraint kind {c.kind!r}", param="response_format")
    grammar = json_grammar(schema)
    m = LLMatcher(tok.ll, grammar, log_level=0)
    if m.is_error():
        raise _schema_error(schema, m.get_error())
    return CompiledConstraint(c, grammar, tok, notes, m)


def json_grammar(schema: dict, coerce_one_of: bool = False) -> str:
    from llguidance import LLMatcher

    return LLMatcher.grammar_from_json_schema(
        schema, defaults=JSON_OPTIONS, overrides={"lenient": False, "coerce_one_of": coerce_one_of}
    )


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


# ---------------------------------------------------------------- schema errors


def _schema_error(schema: dict, msg: str) -> InvalidRequest:
    """What llguidance could not compile, found by asking llguidance again (its
    errors are text): a oneOf it cannot prove exclusive, or an unsupported
    pattern; else its own message."""
    if _compiles(schema, coerce_one_of=True):
        path = _exclusive_one_of_fails(schema)
        return InvalidRequest(f'unsupported JSON schema keyword "oneOf" at {path}: {WHY["oneOf"]}',
                              param="response_format")
    bad = _bad_pattern(schema)
    if bad:
        return InvalidRequest(f"unsupported pattern at {bad[0]}: {_tidy(bad[1])} (lookarounds and "
                              "backreferences are not supported)", param="response_format")
    return InvalidRequest(f"unsupported JSON schema: {_tidy(msg)}", param="response_format")


def _compiles(schema: dict, coerce_one_of: bool = False) -> bool:
    from llguidance import LLMatcher

    return not LLMatcher.validate_grammar_with_warnings(json_grammar(schema, coerce_one_of))[0]


def _exclusive_one_of_fails(schema: dict) -> str:
    """Path of the first oneOf that fails to compile with every other oneOf read as anyOf."""
    paths = [p for p, node in walk(schema) if isinstance(node, dict) and "oneOf" in node]
    for path in paths:
        trial = copy.deepcopy(schema)
        for p, node in list(walk(trial)):
            if p != path and isinstance(node, dict) and "oneOf" in node:
                as_any_of(node)
        if not _compiles(trial):
            return path
    return paths[0] if paths else "#"


def _bad_pattern(schema: dict) -> tuple[str, str] | None:
    """(path, llguidance's error) of the first pattern llguidance cannot compile."""
    from llguidance import LLMatcher

    for path, node in walk(schema):
        pat = node.get("pattern") if isinstance(node, dict) else None
        err = LLMatcher.validate_grammar(LLMatcher.grammar_from_regex(pat)) if isinstance(pat, str) else ""
        if err:
            return f"{path}/pattern", err
    return None


def _tidy(msg: str) -> str:
    lines = [ln.strip() for ln in msg.strip().splitlines() if ln.strip()]
    return "; ".join(lines[:3])[:500] or "unknown error"
