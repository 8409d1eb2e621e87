"""Sampling parameters: the greedy fast path against llama.cpp's chain, and what
each parameter does, on the tiny f32 model."""

from __future__ import annotations

import pytest

from engine import Engine, Request, RequestFailed, SamplingParams
from model_fixtures import tiny_config

PROMPTS = [f"sample prompt {i}: " + "the cat sat on the mat " * (i % 3 + 1) for i in range(8)]


@pytest.fixture(scope="module")
def chain_engine(tiny_model_path):
    """Every sequence through llama.cpp's sampler chain: the reference."""
    eng = Engine(tiny_config(tiny_model_path, n_parallel=8, fast_sampling=False))
    yield eng
    eng.close()


def run(eng: Engine, prompt: str, **params) -> list[int]:
    p = SamplingParams(**{"max_tokens": 16, **params})
    return eng.submit(Request(prompt, p, cache_prompt=False)).result(timeout=60).tokens


def run_batch(eng: Engine, **params) -> list[list[int]]:
    p = SamplingParams(**{"max_tokens": 16, **params})
    handles = [eng.submit(Request(q, p, cache_prompt=False)) for q in PROMPTS]
    return [h.result(timeout=60).tokens for h in handles]


@pytest.mark.parametrize("params", [
    dict(temperature=0),
    dict(temperature=0, ignore_eos=True, max_tokens=40),
    dict(temperature=0, logit_bias={1000: 5.0, 2000: -100.0, 3000: 3.5}),
])
def test_greedy_fast_path_equals_llama_chain(tiny_engine, chain_engine, params):
    assert run_batch(tiny_engine, **params) == run_batch(chain_engine, **params)


def test_logit_bias_on_fast_path(tiny_engine):
    base = run(tiny_engine, PROMPTS[0], temperature=0)
    forced = run(tiny_engine, PROMPTS[0], temperature=0, logit_bias={4242: 100.0})
    assert forced == [4242] * 16
    banned = run(tiny_engine, PROMPTS[0], temperature=0, logit_bias={base[0]: -100.0})
    assert banned[0] != base[0]


def test_ignore_eos_generates_every_token(tiny_engine):
    eos = tiny_engine.model.eog_tokens
    toks = run(tiny_engine, PROMPTS[1], temperature=0, ignore_eos=True, max_tokens=64, logit_bias={eos[0]: 100.0})
    assert len(toks) == 64 and not set(toks) & set(eos)


@pytest.mark.parametrize("params", [
    dict(temperature=1.0, top_k=1),
    dict(temperature=1.0, top_k=0, top_p=1e-6),
    dict(temperature=1.0, top_k=0, top_p=1.0, min_p=1.0),
])
def test_truncation_to_one_token_is_greedy(tiny_engine, params):
    """top_k=1, a tiny top_p or min_p=1 leave only the most likely token."""
    assert run(tiny_engine, PROMPTS[2], seed=5, **params) == run(tiny_engine, PROMPTS[2], temperature=0)


def test_seed_reproducible_alone_and_batched(tiny_engine):
    # top_k keeps the draw away from the ~262k boundaries of a full-vocabulary draw, where
    # a last-ulp logit difference between batch shapes could tip it to the next token.
    params = dict(temperature=1.2, seed=11, top_k=40, top_p=1.0, min_p=0.0)
    alone = [run(tiny_engine, q, **params) for q in PROMPTS]
    assert run_batch(tiny_engine, **params) == alone
    assert run(tiny_engine, PROMPTS[0], **{**params, "seed": 12}) != alone[0]


def test_penalties_change_greedy_output(tiny_engine, chain_engine):
    """A logit bias makes token 4242 win most steps; each penalty cuts that short
    (penalties only see generated tokens, and the random model never repeats itself)."""
    common = dict(temperature=0, max_tokens=40, ignore_eos=True, logit_bias={4242: 12.0})
    plain = run(tiny_engine, "la la la la", **common)
    assert plain.count(4242) > 20
    for penalty in (dict(repeat_penalty=3.0), dict(presence_penalty=2.0), dict(frequency_penalty=2.0)):
        penalised = run(tiny_engine, "la la la la", **common, **penalty)
        assert penalised.count(4242) < plain.count(4242), penalty
        assert penalised == run(chain_engine, "la la la la", **common, **penalty)


@pytest.fixture(scope="module")
def pooled_engine(tiny_model_path):
    """Two threads: unconstrained sequences are sampled on the sampling thread pool."""
    eng = Engine(tiny_config(tiny_model_path, n_parallel=8, n_threads=2))
    assert eng._sampler._pool is not None
    yield eng
    eng.close()


@pytest.mark.parametrize("params", [
    dict(temperature=0, logit_bias={1000: 5.0, 2000: -100.0}),
    dict(temperature=0.9, seed=7, top_k=40),
    dict(temperature=0, max_tokens=24, ignore_eos=True, repeat_penalty=1.5, logit_bias={4242: 8.0}),
])
def test_pooled_sampling_equals_one_thread(pooled_engine, tiny_engine, chain_engine, params):
    """Sampling on the pool picks the same tokens as the engine thread alone, and greedy
    ones the same as llama.cpp's chain."""
    pooled = run_batch(pooled_engine, **params)
    assert pooled == run_batch(tiny_engine, **params)
    if not params.get("temperature"):
        assert pooled == run_batch(chain_engine, **params)


def test_pooled_sampling_error_fails_only_its_request(pooled_engine, monkeypatch):
    """An exception while sampling one sequence on a pool thread reaches that request;
    the others in the same steps finish."""
    sampler = type(pooled_engine._sampler)
    original = sampler._sample_one

    def faulty(self, seq, logits):
        if seq.request.prompt == "victim" and seq.n_generated == 2:
            raise RuntimeError("injected sampling fault")
        return original(self, seq, logits)

    monkeypatch.setattr(sampler, "_sample_one", faulty)
    p = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    others = [pooled_engine.submit(Request(q, p, cache_prompt=False)) for q in PROMPTS[:6]]
    victim = pooled_engine.submit(Request("victim", p, cache_prompt=False))
    with pytest.raises(RequestFailed, match="injected sampling fault"):
        victim.result(timeout=60)
    assert [h.result(timeout=60).usage.completion_tokens for h in others] == [12] * 6
    assert pooled_engine.alive
