"""Structured output, the grammar side: the model's vocabulary for llguidance,
constraints compiled to llguidance grammars, and per-sequence token matchers.

    tok = make_tokenizer(model_ptr)              # once per model (cached)
    cc = compile_constraint(constraint, tok)     # raises InvalidRequest; cached per constraint
    m = cc.matcher()                             # one per sequence; engine/constrained.py samples under it

EOS: the tokenizer knows the model's end-of-generation ids (llama_vocab_is_eog);
a matcher accepts them, and leaves them unmasked, only while is_accepting().
JSON schemas are checked, rewritten and compiled by engine/schema.py.
"""

from __future__ import annotations

import ctypes
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import llama_cpp
import numpy as np
from llguidance import LLMatcher, LLTokenizer
from llguidance.gbnf_to_lark import any_to_lark

from .errors import InvalidRequest
from .schema import json_grammar, prepare_schema, tidy, unsupported
from .types import Constraint

_COMPILED_PER_TOKENIZER = 256
_TOKENIZERS = 4  # models whose tokenizers stay cached (one is ~2 s to build)
_lock = threading.Lock()
_lib = llama_cpp.llama_cpp._lib


def _lru(cache: OrderedDict, key: Any, make, limit: int) -> Any:
    """cache[key], made if missing; the least recently used entries past limit go."""
    with _lock:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
    value = make()  # outside the lock: a slow compile holds up no one else's lookup
    with _lock:
        value = cache.setdefault(key, value)
        while len(cache) > limit:
            cache.popitem(last=False)
    return value


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


def make_tokenizer(model_ptr, eog_ids: list[int] | None = None) -> Tokenizer:
    """Tokenizer for compile_constraint from a llama_model pointer, cached by
    pointer and a fingerprint of the vocabulary (a freed pointer can be reused
    by another model). eog_ids overrides the model's end-of-generation ids."""
    vocab = _lib.llama_model_get_vocab(model_ptr)
    n_vocab = _lib.llama_vocab_n_tokens(vocab)
    sample = _pieces(vocab, range(0, n_vocab, max(1, n_vocab // 64)))
    key = (ctypes.cast(model_ptr, ctypes.c_void_p).value, n_vocab, hash(tuple(sample)),
           None if eog_ids is None else tuple(eog_ids))

    def make() -> Tokenizer:
        eog = [t for t in range(n_vocab) if _lib.llama_vocab_is_eog(vocab, t)] if eog_ids is None else eog_ids
        return Tokenizer(_ll_tokenizer(vocab, n_vocab, eog), n_vocab, tuple(eog))

    return _lru(_tokenizers, key, make, _TOKENIZERS)


def _ll_tokenizer(vocab, n_vocab: int, eog_ids: list[int]) -> LLTokenizer:
    """llguidance.llamacpp.lltokenizer_from_vocab, on the C library directly: it
    takes a third less time and calls no deprecated wrapper (one warning a token)."""
    pieces = _pieces(vocab, range(n_vocab))
    for t, piece in enumerate(pieces):
        attr = _lib.llama_vocab_get_attr(vocab, t)
        # llguidance marks special tokens with a 0xff prefix: grammars never emit them as text.
        if attr & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL or (
                attr & llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED and piece[:1] == b"<" and piece[-1:] == b">"):
            pieces[t] = b"\xff" + piece
    fptr = ctypes.cast(_lib.llama_tokenize, ctypes.c_void_p).value
    return LLTokenizer.from_llamacpp(tokens=pieces, vocab_ptr=vocab, tokenize_fptr=fptr, eos_token=eog_ids or None)


def _pieces(vocab, tokens: range) -> list[bytes]:
    buf, out = ctypes.create_string_buffer(4096), []
    for t in tokens:
        n = _lib.llama_token_to_piece(vocab, t, buf, len(buf), 0, True)
        if n < 0:
            raise ValueError(f"token {t} does not fit a 4096-byte buffer")
        out.append(buf.raw[:n])
    return out


class Matcher:
    """Grammar state of one sequence. Used by the engine thread only. Its errors
    are InvalidRequest naming param: the same grammar fails the same way anywhere."""

    def __init__(self, ll_matcher, tok: Tokenizer, param: str = "grammar"):
        self._m = ll_matcher
        self._param = param
        self._n_vocab = tok.n_vocab
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

    def _error(self, what: str) -> InvalidRequest:
        return InvalidRequest(f"{what}: {self._m.get_error().splitlines()[0]}", param=self._param)

    def consume(self, token: int) -> None:
        if token in self._eog:
            if not self._m.is_accepting():
                raise InvalidRequest("end of generation before the grammar is complete", param=self._param)
            self._ended = True
        elif not self._m.consume_token(token):  # e.g. a parser limit: 20,000 alternatives in one rule
            raise self._error(f"token {token} rejected by the grammar")

    def mask_logits(self, logits: np.ndarray) -> None:
        """Set logits of every token the grammar forbids now to -inf, in place."""
        self._m.unsafe_compute_mask_ptr(self._bitmask.ctypes.data, self._bitmask.nbytes)
        if self._m.is_error():
            raise self._error("grammar error")
        allowed = np.unpackbits(self._bitmask.view(np.uint8), bitorder="little")
        n = min(len(logits), self._n_vocab)
        allowed[self._eog_idx] = self.is_accepting()
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
    tokenizer: Tokenizer
    notes: list[str]  # rewrites applied (dropped formats, ...)
    _template: Any  # llguidance.LLMatcher, copied for each sequence

    def matcher(self) -> Matcher:
        return Matcher(self._template.deep_copy(), self.tokenizer, _param(self.constraint))


def _param(c: Constraint) -> str:
    """The request field a constraint came from, as its errors name it."""
    return "grammar" if c.kind in ("gbnf", "lark") else "response_format"


def compile_constraint(c: Constraint, tokenizer: Tokenizer) -> CompiledConstraint:
    """Compile c for tokenizer. Raises InvalidRequest (param "response_format" for
    JSON kinds, "grammar" for grammars) naming what is unsupported and where.
    Results are cached by constraint text, so a batch sharing a schema compiles once."""
    # Key order matters (it fixes property order in the output): no sort_keys.
    key = (c.kind, c.value if isinstance(c.value, str) else json.dumps(c.value, ensure_ascii=False))
    return _lru(tokenizer.compiled, key, lambda: _compile(c, tokenizer), _COMPILED_PER_TOKENIZER)


def _compile(c: Constraint, tok: Tokenizer) -> CompiledConstraint:
    schema, notes = None, []
    if c.kind in ("gbnf", "lark"):
        grammar = LLMatcher.grammar_from_lark(_lark_text(c))
    elif c.kind in ("json_object", "json_schema"):
        schema, notes = prepare_schema(c.value) if c.kind == "json_schema" else ({"type": "object"}, [])
        grammar = json_grammar(schema)
    else:
        raise InvalidRequest(f"unknown constraint kind {c.kind!r}", param="response_format")
    m = LLMatcher(tok.ll, grammar, log_level=0)
    if m.is_error() and schema is not None:
        raise unsupported(schema, m.get_error())
    if m.is_error():
        name = "GBNF" if c.kind == "gbnf" else "Lark"
        raise InvalidRequest(f"invalid {name} grammar: {tidy(m.get_error())}", param="grammar")
    _check_startable(m, _param(c))
    return CompiledConstraint(c, tok, notes, m)


def _check_startable(m: LLMatcher, param: str) -> None:
    """A grammar no text can start (a $ref cycle, `root ::= root "a"`) compiles, then
    fails at its first token as if the engine had: refused here, as the request's fault."""
    probe = m.deep_copy()
    probe.compute_bitmask()
    if probe.is_error():
        what = "grammar" if param == "grammar" else "JSON schema"
        raise InvalidRequest(f"the {what} admits no output ({probe.get_error().splitlines()[0]}): "
                             "check it for rules that only refer to themselves", param=param)


def _lark_text(c: Constraint) -> str:
    if not isinstance(c.value, str) or not c.value.strip():
        raise InvalidRequest("grammar must be a non-empty string", param="grammar")
    if c.kind == "lark":
        return c.value
    try:
        return any_to_lark(c.value)
    except Exception as e:  # the converter raises plain exceptions on bad GBNF
        raise InvalidRequest(f"invalid GBNF grammar: {e}", param="grammar") from None
