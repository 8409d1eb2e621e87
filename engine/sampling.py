"""Sampling: parameter checks, per-request llama.cpp sampler chains, and the
per-step sampler. Requests without penalties or grammars skip the chain, which
builds a 262,144-entry candidate array per call (the bulk of the host time per
step): greedy is an argmax over a zero-copy view of the logits row, and top-k
sampling works on the few tokens that can be in the top k."""

from __future__ import annotations

import ctypes
import math
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import llama_cpp
import numpy as np

from .constrained import ConstrainedSampler
from .errors import InvalidRequest
from .model import Model
from .sequence import Sequence
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


def logit_bias(p: SamplingParams, eog_tokens: list[int]) -> dict[int, float]:
    bias = dict(p.logit_bias)
    if p.ignore_eos:
        bias.update({t: -math.inf for t in eog_tokens})
    return bias


MAX_FAST_TOP_K = 256  # the fast draw finds the top k through 256+ block maxima


def needs_chain(p: SamplingParams) -> bool:
    """Whether sampling needs llama.cpp's chain (penalties, grammars, a top-k the fast draw can't do)."""
    penalties = p.repeat_penalty != 1.0 or p.presence_penalty or p.frequency_penalty
    top_k_ok = p.temperature <= 0 or 0 < p.top_k <= MAX_FAST_TOP_K
    return bool(penalties) or p.constraint is not None or not top_k_ok


def top_k_ids(row: np.ndarray, k: int, block: int = 1024) -> np.ndarray:
    """The ids of the k largest logits, largest first. The k-th largest of the block
    maxima bounds the k-th largest logit from below, so one pass finds a few hundred
    candidates to sort instead of 262,144."""
    k = min(k, row.size)  # llama.cpp's top-k keeps everything when k is larger
    maxima = np.maximum.reduceat(row, np.arange(0, row.size, block))
    if k > maxima.size:
        return top_k_ids(row, k, max(1, row.size // k))
    threshold = np.partition(maxima, maxima.size - k)[maxima.size - k]
    cand = np.flatnonzero(row >= threshold)
    return cand[np.argsort(-row[cand], kind="stable")[:k]]


def truncate(row: np.ndarray, p: SamplingParams) -> tuple[np.ndarray, np.ndarray]:
    """The tokens llama.cpp's chain (build_chain) would draw from, and their unnormalised
    probabilities: top_k, top_p, min_p, then temperature, on the top-k candidates only."""
    ids = top_k_ids(row, p.top_k)
    logits = row[ids].astype(np.float64)
    n = len(ids)
    if p.top_p < 1.0:  # the smallest head whose probability reaches top_p
        probs = np.exp(logits - logits[0])
        n = min(n, int(np.searchsorted(np.cumsum(probs / probs.sum()), p.top_p)) + 1)
    if p.min_p > 0:  # tokens at least min_p times as likely as the best
        n = max(1, int(np.count_nonzero(logits[:n] >= logits[0] + math.log(p.min_p))))
    return ids[:n], np.exp((logits[:n] - logits[0]) / p.temperature)


def draw(row: np.ndarray, p: SamplingParams, rng: np.random.Generator) -> int:
    ids, weights = truncate(row, p)
    cum = np.cumsum(weights)
    return int(ids[min(len(ids) - 1, int(np.searchsorted(cum, rng.random() * cum[-1], side="right")))])


def build_chain(p: SamplingParams, n_vocab: int, eog_tokens: list[int], n_ctx: int) -> llama_cpp.llama_sampler_p:
    """A sampler chain for one sequence. Free with llama_sampler_free."""
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    add = lambda s: llama_cpp.llama_sampler_chain_add(chain, s)  # noqa: E731

    bias = logit_bias(p, eog_tokens)
    if bias:
        arr = (llama_cpp.llama_logit_bias * len(bias))()
        for i, (tok, b) in enumerate(bias.items()):
            arr[i].token, arr[i].bias = tok, b
        add(llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(bias), arr))
    if p.repeat_penalty != 1.0 or p.presence_penalty or p.frequency_penalty:
        last_n = n_ctx if p.repeat_last_n == -1 else p.repeat_last_n  # llama.cpp reads -1 as "off"
        add(llama_cpp.llama_sampler_init_penalties(n_vocab, last_n, p.repeat_penalty, p.frequency_penalty, p.presence_penalty))
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
    add(llama_cpp.llama_sampler_init_dist(seed(p)))
    return chain


def seed(p: SamplingParams) -> int:
    return (p.seed if p.seed is not None else random.getrandbits(32)) & 0xFFFFFFFF


@dataclass
class _FastPick:
    bias_ids: np.ndarray
    bias: np.ndarray
    rng: np.random.Generator  # per request: a seed gives the same tokens alone or batched


class Sampler:
    """Picks the next token of each sequence whose logits the last decode produced.
    Only this thread calls llama.cpp (chains, grammars); requests on the numpy fast
    paths are picked on a thread pool meanwhile (numpy releases the GIL)."""

    def __init__(self, ctx: llama_cpp.llama_context_p, model: Model, n_ctx: int, fast: bool = True,
                 n_threads: int | None = None):
        self._ctx = ctx
        self._model = model
        self._n_ctx = n_ctx
        self._fast = fast
        self._constrained = ConstrainedSampler(ctx, model)
        self._fast_seqs: dict[Sequence, _FastPick] = {}
        self._n_parts = max(1, min(n_threads or os.cpu_count() or 1, 8))
        self._pool = ThreadPoolExecutor(self._n_parts - 1, "llamaq-sample") if self._n_parts > 1 else None

    def start(self, seq: Sequence) -> None:
        p, m = seq.request.params, self._model
        if self._fast and not needs_chain(p):
            bias = logit_bias(p, m.eog_tokens)
            self._fast_seqs[seq] = _FastPick(np.fromiter(bias, np.int64), np.fromiter(bias.values(), np.float32),
                                             np.random.default_rng(seed(p)))
            return
        seq.sampler = build_chain(p, m.n_vocab, m.eog_tokens, self._n_ctx)

    def free(self, seq: Sequence) -> None:
        self._fast_seqs.pop(seq, None)
        if seq.sampler is not None:
            llama_cpp.llama_sampler_free(seq.sampler)
            seq.sampler = None

    def close(self) -> None:
        if self._pool:
            self._pool.shutdown()

    def sample(self, seqs: list[Sequence], n_outputs: int) -> tuple[list[int | Exception], float]:
        """Each sequence's token, or the exception that sampling it raised; and the
        CPU ms the pool threads spent (this thread's own time is the caller's to measure)."""
        base = llama_cpp.llama_get_logits(self._ctx)  # applies llama.cpp's pending output reorder
        logits = np.ctypeslib.as_array(base, shape=(n_outputs, self._model.n_vocab)) if base else None
        rows = [(seq, self._row(logits, seq.batch_index)) for seq in seqs if seq in self._fast_seqs]
        parts = [rows[i :: self._n_parts] for i in range(self._n_parts)] if len(rows) >= 4 else [rows]
        futures = [self._pool.submit(self._pick_part, part) for part in parts[1:] if part]
        done: dict[Sequence, int | Exception] = {}
        for seq in seqs:
            if seq not in self._fast_seqs:
                done[seq] = _attempt(self._sample_llama, seq)
        done.update(self._pick_part(parts[0])[0])
        pool_ms = 0.0
        for f in futures:
            more, cpu_ms = f.result()
            done.update(more)
            pool_ms += cpu_ms
        return [done[s] for s in seqs], pool_ms

    def _sample_llama(self, seq: Sequence) -> int:
        if seq.matcher is not None:
            return self._constrained.sample(seq.sampler, seq.matcher, seq.batch_index)
        return llama_cpp.llama_sampler_sample(seq.sampler, self._ctx, seq.batch_index)

    def _pick_part(self, part: list[tuple[Sequence, np.ndarray]]) -> tuple[dict, float]:
        t0 = time.thread_time()
        out = {seq: _attempt(self._pick, seq, row) for seq, row in part}
        return out, (time.thread_time() - t0) * 1000

    def _pick(self, seq: Sequence, row: np.ndarray) -> int:
        fast = self._fast_seqs[seq]
        if fast.bias_ids.size:
            row[fast.bias_ids] += fast.bias  # in llama.cpp's buffer, as its logit-bias sampler does to its copy
        p = seq.request.params
        if p.temperature <= 0:
            return int(row.argmax())  # the first maximum, like llama.cpp's greedy sampler
        return draw(row, p, fast.rng)

    def _row(self, logits: np.ndarray, batch_index: int) -> np.ndarray:
        """A batch entry's logits: a view into llama.cpp's output buffer."""
        ptr = llama_cpp.llama_get_logits_ith(self._ctx, batch_index)
        return logits[(ctypes.addressof(ptr.contents) - logits.ctypes.data) // logits.strides[0]]


def _attempt(fn, *args) -> int | Exception:
    try:
        return fn(*args)
    except Exception as e:
        return e
