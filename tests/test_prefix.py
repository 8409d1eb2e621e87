"""Shared-prefix KV reuse: correctness (exact on f32), accounting, eviction."""

from __future__ import annotations

import pytest

from engine import Engine, Request, SamplingParams
from engine.prefix_cache import PrefixIndex
from model_fixtures import tiny_config

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def text(n_words: int, seed: int) -> str:
    return " ".join(WORDS[(seed * 5 + i * (seed + 1)) % len(WORDS)] for i in range(n_words))


SYSTEM = "Instructions: " + text(150, 1) + "\n"


def run(eng: Engine, prompt, cache=True, n=16):
    return eng.submit(Request(prompt, SamplingParams(temperature=0, max_tokens=n), cache_prompt=cache)).result(timeout=60)


def test_index_longest_match_and_removal():
    idx = PrefixIndex()
    idx.extend(1, [1, 2, 3, 4])
    idx.extend(2, [1, 2, 5])
    assert idx.longest_match([1, 2, 3, 9]) == (3, {1})
    assert idx.longest_match([1, 2, 7]) == (2, {1, 2})
    assert idx.longest_match([9]) == (0, set())
    idx.truncate(1, 2)
    assert idx.longest_match([1, 2, 3]) == (2, {1, 2})
    idx.remove(2)
    idx.remove(1)
    assert idx.longest_match([1, 2]) == (0, set())
    assert not idx._root.children


def test_reuse_is_identical_to_cold(tiny_model_path):
    with Engine(tiny_config(tiny_model_path)) as eng:
        prompt = SYSTEM + "Question: " + text(10, 3)
        cold = run(eng, prompt, cache=False)
        assert cold.usage.cached_tokens == 0
        run(eng, SYSTEM + "Question: " + text(12, 7))  # caches the system prompt
        warm = run(eng, prompt)
        n_system = len(eng.tokenize(SYSTEM))
        assert warm.usage.cached_tokens >= n_system - 1
        assert warm.usage.cached_tokens < warm.usage.prompt_tokens
        assert warm.tokens == cold.tokens
        # the same prompt again reuses everything but the last prompt token
        again = run(eng, prompt)
        assert again.usage.cached_tokens == again.usage.prompt_tokens - 1
        assert again.tokens == cold.tokens


def test_reuse_extends_into_generated_text(tiny_model_path):
    """A follow-up turn that contains the previous answer reuses the answer's KV too."""
    with Engine(tiny_config(tiny_model_path)) as eng:
        first = run(eng, SYSTEM)
        follow = eng.tokenize(SYSTEM) + first.tokens[:-1] + eng.tokenize(" next", add_special=False)
        r = run(eng, follow)
        assert r.usage.cached_tokens >= len(eng.tokenize(SYSTEM)) + len(first.tokens) - 2
        assert r.tokens == run(eng, follow, cache=False).tokens


def test_concurrent_requests_prefill_the_shared_prefix_once(tiny_model_path):
    with Engine(tiny_config(tiny_model_path, n_parallel=8, n_batch=128)) as eng:
        prompts = [SYSTEM + f"Item {i}: " + text(6, i) for i in range(8)]
        cold = [run(eng, p, cache=False).tokens for p in prompts]
        eng._sched.evict_all()
        before = eng.stats().prompt_tokens_computed
        handles = [
            eng.submit(Request(p, SamplingParams(temperature=0, max_tokens=16))) for p in prompts
        ]
        results = [h.result(timeout=60) for h in handles]
        computed = eng.stats().prompt_tokens_computed - before
        n_prefix = len(eng.tokenize(SYSTEM))
        suffixes = sum(r.usage.prompt_tokens - n_prefix for r in results)
        assert computed <= n_prefix + suffixes + len(prompts)
        assert [r.tokens for r in results] == cold
        assert sum(r.usage.cached_tokens for r in results) >= (len(prompts) - 1) * (n_prefix - 1)


def test_eviction_of_the_source_never_breaks_a_running_request(tiny_model_path):
    # 2 running + 1 cache slot: admitting others forces the shared source out mid-run.
    with Engine(tiny_config(tiny_model_path, n_parallel=2, n_seq_cache=1)) as eng:
        prompts = [SYSTEM + f"Case {i}: " + text(5, i) for i in range(6)]
        cold = [run(eng, p, cache=False, n=24).tokens for p in prompts]
        run(eng, prompts[0], n=24)
        handles = [
            eng.submit(Request(p, SamplingParams(temperature=0, max_tokens=24))) for p in prompts[1:]
        ]
        results = [h.result(timeout=60) for h in handles]
        assert [r.tokens for r in results] == cold[1:]
        assert eng.stats().evictions > 0
        assert any(r.usage.cached_tokens > 0 for r in results)


def test_kv_pressure_evicts_idle_entries_instead_of_failing(tiny_model_path):
    with Engine(tiny_config(tiny_model_path, n_ctx=1024, n_parallel=2, n_seq_cache=8)) as eng:
        for i in range(12):
            r = run(eng, f"Doc {i}: " + text(120, i), n=8)
            assert r.finish_reason == "length"
        assert eng.stats().evictions > 0


def test_partial_prefix_match_after_eviction_is_identical(tiny_model_path):
    with Engine(tiny_config(tiny_model_path, n_parallel=1, n_seq_cache=2)) as eng:
        base = SYSTEM + text(20, 9)
        run(eng, base + " one")
        for i in range(3):  # push the entry towards eviction, then bring it back
            run(eng, f"Other {i} " + text(30, i))
        run(eng, base + " two")
        probe = base + " three " + text(4, 2)
        warm = run(eng, probe)
        assert warm.usage.cached_tokens > 0
        assert warm.tokens == run(eng, probe, cache=False).tokens


def test_cache_prompt_false_neither_reuses_nor_publishes(tiny_model_path):
    with Engine(tiny_config(tiny_model_path)) as eng:
        run(eng, SYSTEM + "x", cache=False)
        assert run(eng, SYSTEM + "y").usage.cached_tokens == 0
        assert eng.stats().prompt_tokens_reused == 0


@pytest.mark.slow
def test_default_model_reuse_by_teacher_forcing(default_engine, default_model_path):
    """Quantized models are not batch-invariant: check each reused-run token is
    within a small margin of the cold run's best logit at that position."""
    from llama_cpp import Llama

    system = "You are a helpful assistant. " + text(120, 4) + "\n"
    run(default_engine, system + "Q: first?\nA:")
    prompt = system + "Q: what comes next?\nA:"
    warm = run(default_engine, prompt, n=16)
    assert warm.usage.cached_tokens > 100
    llm = Llama(model_path=str(default_model_path), n_ctx=1024, logits_all=True, verbose=False)
    tokens = default_engine.tokenize(prompt)
    llm.eval(tokens + warm.tokens[:-1])
    margins = []
    for i, tok in enumerate(warm.tokens):
        logits = llm.scores[len(tokens) - 1 + i]
        margins.append(float(logits.max() - logits[tok]))
    llm.close()
    assert max(margins) < 0.5, margins


def test_many_long_requests_never_overrun_the_cache(tiny_model_path):
    """Admission reserves room for prompts and outputs: more work than the KV
    cache holds waits its turn instead of failing a decode."""
    with Engine(tiny_config(tiny_model_path, n_ctx=2048, n_parallel=16)) as eng:
        params = SamplingParams(temperature=0.8, seed=1, max_tokens=48, ignore_eos=True)
        handles = [eng.submit(Request(f"Doc {i}: " + text(30 + 9 * i, i), params, cache_prompt=False)) for i in range(24)]
        results = [h.result(timeout=60) for h in handles]
        assert all(r.usage.completion_tokens == 48 for r in results)
