"""Sampling parameters: the greedy fast path against llama.cpp's chain, and what
each parameter does, on the tiny f32 model."""

from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np
import pytest

from engine import Engine, Request, RequestFailed, SamplingParams, sampling
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
    ones the same as llama.cpp's chain (penalties: the chain, next to pooled requests)."""
    pooled = run_batch(pooled_engine, **params)
    assert pooled == run_batch(tiny_engine, **params)
    if not params.get("temperature"):
        assert pooled == run_batch(chain_engine, **params)


def test_pooled_sampling_error_fails_only_its_request(pooled_engine, monkeypatch):
    """An exception while sampling one sequence on a pool thread reaches that request;
    the others in the same steps finish."""
    sampler = type(pooled_engine._sampler)
    original = sampler._pick

    def faulty(self, seq, row):
        if seq.request.prompt == "victim" and seq.n_generated == 2:
            raise RuntimeError("injected sampling fault")
        return original(self, seq, row)

    monkeypatch.setattr(sampler, "_pick", faulty)
    p = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    others = [pooled_engine.submit(Request(q, p, cache_prompt=False)) for q in PROMPTS[:6]]
    victim = pooled_engine.submit(Request("victim", p, cache_prompt=False))
    with pytest.raises(RequestFailed, match="injected sampling fault"):
        victim.result(timeout=60)
    assert [h.result(timeout=60).usage.completion_tokens for h in others] == [12] * 6
    assert pooled_engine.alive


def test_top_k_ids_is_the_top_k():
    rng = np.random.default_rng(0)
    for n, k in [(262_144, 1), (262_144, 40), (262_144, 256), (5_000, 40), (300, 256), (1_000, 300), (100, 256)]:
        row = (rng.normal(size=n) * 3).astype(np.float32)
        row[rng.integers(0, n, 8)] = row.max()  # ties at the top
        got = sampling.top_k_ids(row, k)
        assert len(got) == min(k, n) and len(set(got.tolist())) == len(got)
        assert np.all(np.diff(row[got]) <= 0)  # largest first
        assert row[got].min() >= np.sort(row)[::-1][min(k, n) - 1]


def llama_chain_distribution(row: np.ndarray, p: SamplingParams) -> dict[int, float]:
    """What llama.cpp's own chain keeps and with which probabilities (its dist step is the draw)."""
    chain = sampling.build_chain(p, row.size, [], 4096)
    llama_cpp.llama_sampler_free(llama_cpp.llama_sampler_chain_remove(chain, llama_cpp.llama_sampler_chain_n(chain) - 1))  # dist: the draw
    cand = np.zeros(row.size, dtype=[("id", np.int32), ("logit", np.float32), ("p", np.float32)])
    cand["id"], cand["logit"] = np.arange(row.size), row
    arr = llama_cpp.llama_token_data_array(data=cand.ctypes.data_as(llama_cpp.llama_token_data_p),
                                           size=row.size, selected=-1, sorted=False)
    llama_cpp.llama_sampler_apply(chain, ctypes.byref(arr))
    kept = np.ctypeslib.as_array(ctypes.cast(arr.data, ctypes.POINTER(ctypes.c_byte)), shape=(arr.size * 12,))
    kept = kept.view(cand.dtype)
    llama_cpp.llama_sampler_free(chain)
    w = np.exp(kept["logit"].astype(np.float64) - kept["logit"].max())
    return dict(zip(kept["id"].tolist(), (w / w.sum()).tolist()))


@pytest.mark.parametrize("params", [
    dict(temperature=0.8),  # the defaults: top_k 40, top_p 0.95, min_p 0.05
    dict(temperature=1.0, top_k=40, top_p=1.0, min_p=0.0),
    dict(temperature=1.5, top_k=200, top_p=0.5, min_p=0.0),
    dict(temperature=0.3, top_k=100, top_p=1.0, min_p=0.2),
    dict(temperature=2.0, top_k=7, top_p=0.9, min_p=0.01),
])
def test_fast_draw_keeps_llama_chain_distribution(params):
    p = SamplingParams(**params)
    assert not sampling.needs_chain(p)
    row = (np.random.default_rng(1).normal(size=262_144) * 2.5).astype(np.float32)
    ids, weights = sampling.truncate(row, p)
    ours = dict(zip(ids.tolist(), (weights / weights.sum()).tolist()))
    theirs = llama_chain_distribution(row, p)
    assert ours.keys() == theirs.keys()
    assert max(abs(ours[t] - theirs[t]) for t in ours) < 1e-5
    draws = [sampling.draw(row, p, np.random.default_rng(s)) for s in range(300)]
    assert set(draws) <= ours.keys()
    assert draws == [sampling.draw(row, p, np.random.default_rng(s)) for s in range(300)]  # a seed repeats


def test_pooled_steps_mixing_fast_and_chain_requests(pooled_engine, tiny_engine):
    """Fast-path rows picked on the pool and chain rows sampled on the engine thread in the
    same steps: each request gets the tokens it gets alone."""
    kinds = [dict(temperature=0), dict(temperature=0, repeat_penalty=1.3), dict(temperature=0.7, seed=3),
             dict(temperature=0.7, seed=3, top_k=0)]

    def submit_all(eng):
        return [eng.submit(Request(q, SamplingParams(max_tokens=16, **kinds[i % 4]), cache_prompt=False))
                for i, q in enumerate(PROMPTS)]

    together = [h.result(timeout=60).tokens for h in submit_all(pooled_engine)]
    alone = [run(tiny_engine, q, **kinds[i % 4]) for i, q in enumerate(PROMPTS)]
    assert together == alone


def test_bench_engine_breaks_each_step_down(tmp_path, tiny_model_path):
    """`llamaq bench engine` reports decode / sampling / other per step for both samplers
    and the raw loop's one-argmax sampling floor, with the ratios taken from its own rows."""
    import json

    from click.testing import CliRunner

    from cli.bench.engine import command as bench

    out = tmp_path / "engine.json"
    args = ["--model", str(tiny_model_path), "--concurrency", "1,4", "--requests", "4", "--prompt-tokens", "8",
            "--gen-tokens", "3", "--threads", "1", "--sampler", "both", "--out", str(out)]
    r = CliRunner().invoke(bench, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rows = json.loads(out.read_text())["rows"]
    by = {(row["mode"], row["concurrency"]): row for row in rows}
    assert set(by) >= {(m, c) for m in ("engine", "engine, llama.cpp chain", "raw loop (ceiling)") for c in (1, 4)}
    for c in (1, 4):
        raw, fast, chain = by["raw loop (ceiling)", c], by["engine", c], by["engine, llama.cpp chain", c]
        assert raw["tokens"] == c * 3 and fast["tokens"] == chain["tokens"] == 4 * 3
        assert raw["decode_ms"] > 0 and raw["sample_ms"] > 0
        for row in (fast, chain):
            assert row["decode_ms"] > 0 and row["sample_ms"] > 0
            assert row["host_ms"] == pytest.approx(row["sample_ms"] + row["other_ms"])
            assert row["sample_vs_floor"] == pytest.approx(row["sample_ms"] / raw["sample_ms"])
        assert fast["vs_chain"] == pytest.approx(fast["tok_s"] / chain["tok_s"])
    assert "sample x floor" in r.stdout
