"""Lazy grammar sampling: sample unconstrained, and only when the grammar rejects
that token mask the logits and sample again (as llama.cpp's common sampler does).
Most tokens of a well-prompted model pass the check, so most steps pay nothing
for the 262k-token mask."""

from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np

from .grammar import Matcher, compile_constraint, make_tokenizer
from .model import Model
from .types import Constraint

_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)


def compile_request_constraint(c: Constraint | None, model: Model) -> Matcher | None:
    """A fresh matcher for one request, or None. Raises InvalidRequest for bad schemas.
    make_tokenizer caches per model pointer and vocabulary, not per Python object."""
    if c is None:
        return None
    return compile_constraint(c, make_tokenizer(model.ptr, model.eog_tokens)).matcher()


class ConstrainedSampler:
    """Samples one sequence's token under a grammar matcher, in the engine thread."""

    def __init__(self, ctx: llama_cpp.llama_context_p, model: Model):
        self._ctx = ctx
        self._n_vocab = model.n_vocab
        self._ids = np.arange(model.n_vocab, dtype=np.int32)
        self._cand = np.zeros(model.n_vocab, dtype=_TOKEN_DATA)
        self._arr = llama_cpp.llama_token_data_array(size=0, selected=-1, sorted=False)

    def _apply(self, chain, logits: np.ndarray) -> int:
        """The chain's pick from logits, not yet accepted (llama_sampler_sample would accept it)."""
        cand = self._cand
        cand["id"] = self._ids
        cand["logit"] = logits
        cand["p"] = 0.0
        arr = self._arr
        arr.data = cand.ctypes.data_as(llama_cpp.llama_token_data_p)
        arr.size, arr.selected, arr.sorted = self._n_vocab, -1, False
        llama_cpp.llama_sampler_apply(chain, ctypes.byref(arr))
        return int(arr.data[arr.selected].id)

    def sample(self, chain, matcher, index: int) -> int:
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._ctx, index), shape=(self._n_vocab,))
        token = self._apply(chain, logits)
        if not matcher.accepts(token):
            matcher.mask_logits(logits)  # in place, in llama.cpp's logits buffer
            token = self._apply(chain, logits)
        llama_cpp.llama_sampler_accept(chain, token)
        matcher.consume(token)
        return token
