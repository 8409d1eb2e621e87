"""Per-request sampler chains in llama.cpp (no logits copied into Python)."""

from __future__ import annotations

import math
import random

import llama_cpp

from .errors import InvalidRequest
from .types import SamplingParams


def validate(p: SamplingParams, n_vocab: int) -> None:
    """Raise InvalidRequest naming the first bad parameter."""

    def bad(param: str, why: str) -> InvalidRequest:
        return InvalidRequest(f"{param} {why}", param=param)

    checks = [
        ("temperature", p.temperature, lambda v: 0 <= v <= 100, "must be between 0 and 100"),
        ("top_p", p.top_p, lambda v: 0 < v <= 1, "must be in (0, 1]"),
        ("min_p", p.min_p, lambda v: 0 <= v <= 1, "must be in [0, 1]"),
        ("top_k", p.top_k, lambda v: v >= 0, "must be >= 0"),
        ("max_tokens", p.max_tokens, lambda v: v >= 1, "must be >= 1"),
        ("repeat_penalty", p.repeat_penalty, lambda v: 0 < v <= 10, "must be in (0, 10]"),
        ("repeat_last_n", p.repeat_last_n, lambda v: v >= -1, "must be >= -1"),
        ("presence_penalty", p.presence_penalty, lambda v: -2 <= v <= 2, "must be between -2 and 2"),
        ("frequency_penalty", p.frequency_penalty, lambda v: -2 <= v <= 2, "must be between -2 and 2"),
    ]
    for name, value, ok, why in checks:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad(name, "must be a finite number")
        if not ok(value):
            raise bad(name, f"{why}, got {value}")
    if not isinstance(p.top_k, int) or not isinstance(p.max_tokens, int):
        raise bad("top_k" if not isinstance(p.top_k, int) else "max_tokens", "must be an integer")
    if p.seed is not None and (not isinstance(p.seed, int) or isinstance(p.seed, bool)):
        raise bad("seed", "must be an integer")
    for tok, bias in p.logit_bias.items():
        if not isinstance(tok, int) or not 0 <= tok < n_vocab:
            raise bad("logit_bias", f"has token id {tok!r} outside the vocabulary (0..{n_vocab - 1})")
        if not isinstance(bias, (int, float)) or not -100 <= bias <= 100:
            raise bad("logit_bias", f"value for token {tok} must be between -100 and 100")
    if not isinstance(p.stop, list) or not all(isinstance(s, str) for s in p.stop):
        raise bad("stop", "must be a list of strings")


def build_chain(p: SamplingParams, n_vocab: int, eog_tokens: list[int]) -> llama_cpp.llama_sampler_p:
    """A sampler chain for one sequence. Free with llama_sampler_free."""
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    add = lambda s: llama_cpp.llama_sampler_chain_add(chain, s)  # noqa: E731

    bias = dict(p.logit_bias)
    if p.ignore_eos:
        bias.update({t: -math.inf for t in eog_tokens})
    if bias:
        arr = (llama_cpp.llama_logit_bias * len(bias))()
        for i, (tok, b) in enumerate(bias.items()):
            arr[i].token, arr[i].bias = tok, b
        add(llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(bias), arr))
    if p.repeat_penalty != 1.0 or p.presence_penalty or p.frequency_penalty:
        add(
            llama_cpp.llama_sampler_init_penalties(
                n_vocab, p.repeat_last_n, p.repeat_penalty, p.frequency_penalty, p.presence_penalty
            )
        )
    if p.temperature <= 0:
        add(llama_cpp.llama_sampler_init_greedy())
        return chain
    if p.top_k > 0:
        add(llama_cpp.llama_sampler_init_top_k(p.top_k))
    if p.top_p < 1.0:
        add(llama_cpp.llama_sampler_init_top_p(p.top_p, 1))
    if p.min_p > 0:
        add(llama_cpp.llama_sampler_init_min_p(p.min_p, 1))
    add(llama_cpp.llama_sampler_init_temp(p.temperature))
    seed = p.seed if p.seed is not None else random.getrandbits(32)
    add(llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    return chain
