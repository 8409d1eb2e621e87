"""Engine edge cases that used to crash the process or hang. Crash cases run in
a subprocess, so that an abort fails the test instead of killing pytest."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from engine import Engine, EngineDead, InvalidRequest, ModelLoadError, Request, RequestFailed, SamplingParams
from engine.errors import InvalidConfig
from engine.model import Model
from engine.text_stream import TextStream
from model_fixtures import tiny_config
from tiny_model import cached_tiny_model

TESTS = Path(__file__).parent


def run_isolated(code: str, model: Path, timeout: float = 120) -> str:
    """Run code in a fresh interpreter with `cfg(**overrides)` for the tiny model;
    return its stdout, failing on any non-zero exit (an abort included)."""
    prelude = f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        from model_fixtures import tiny_config
        from engine import *
        from engine.errors import InvalidConfig
        def cfg(**kw):
            return tiny_config({str(model)!r}, **kw)
    """
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(prelude) + textwrap.dedent(code)],
                       capture_output=True, text=True, timeout=timeout, cwd=TESTS.parent)
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-3000:]}"
    return r.stdout


def greedy(prompt: str, n: int = 8, cache: bool = True) -> Request:
    return Request(prompt, SamplingParams(temperature=0, max_tokens=n), cache_prompt=cache)


def test_close_twice_after_embed(tiny_model_path):
    out = run_isolated("""
        eng = Engine(cfg())
        eng.embed(["hello"])
        eng.close()
        eng.close()
        print("closed twice")
    """, tiny_model_path)
    assert "closed twice" in out


def test_every_call_after_close_raises_engine_dead(tiny_model_path):
    out = run_isolated("""
        eng = Engine(cfg())
        eng.embed(["hello"])
        eng.close()
        calls = {"tokenize": lambda: eng.tokenize("x"), "detokenize": lambda: eng.detokenize([1]),
                 "embed": lambda: eng.embed(["x"]), "submit": lambda: eng.submit(Request("x")),
                 "generate": lambda: eng.generate("x")}
        for name, call in calls.items():
            try:
                call()
                print(name, "did not raise")
            except EngineDead:
                print(name, "EngineDead")
    """, tiny_model_path)
    assert out.count("EngineDead") == 5, out


def test_n_parallel_above_n_batch_is_refused_naming_it(tiny_model_path):
    out = run_isolated("""
        try:
            eng = Engine(cfg(n_parallel=8, n_batch=4))
        except InvalidConfig as e:
            print("refused:", e.param, e)
        else:
            hs = [eng.submit(Request(f"prompt {i}", SamplingParams(max_tokens=8))) for i in range(8)]
            [h.result(timeout=60) for h in hs]
            print("ran")
    """, tiny_model_path)
    assert "refused: n_parallel" in out and "n_batch" in out


@pytest.mark.parametrize("overrides, param", [
    (dict(n_parallel=0), "n_parallel"),
    (dict(n_parallel=300, n_batch=512), "n_parallel"),
    (dict(n_seq_cache=-1), "n_seq_cache"),
    (dict(n_batch=0), "n_batch"),
    (dict(kv_type="f8"), "kv_type"),
    (dict(max_ctx_per_seq=1), "max_ctx_per_seq"),
])
def test_impossible_configs_are_refused_at_construction(tiny_model_path, overrides, param):
    with pytest.raises(InvalidConfig) as e:
        Engine(tiny_config(tiny_model_path, **overrides))
    assert e.value.param == param and param in str(e.value)


def test_same_prompt_again_with_one_sequence_id(tiny_model_path):
    """n_parallel=1, n_seq_cache=0: the only id holds the cached prompt; the repeat
    takes it over (and reuses the prefix) instead of spinning forever."""
    with Engine(tiny_config(tiny_model_path, n_parallel=1, n_seq_cache=0)) as eng:
        first = eng.submit(greedy("the same prompt, sent twice")).result(timeout=30)
        again = eng.submit(greedy("the same prompt, sent twice")).result(timeout=30)
        other = eng.submit(greedy("a different prompt")).result(timeout=30)
    assert again.tokens == first.tokens
    assert again.usage.cached_tokens == again.usage.prompt_tokens - 1
    assert other.usage.completion_tokens == 8


def test_submit_racing_close_never_strands_a_handle(tiny_model_path):
    eng = Engine(tiny_config(tiny_model_path))
    tokens = eng._prompt_tokens

    def close_meanwhile(prompt):  # close() lands between submit's checks and its enqueue
        out = tokens(prompt)
        threading.Thread(target=eng.close).start()
        eng._thread.join(10)
        return out

    eng._prompt_tokens = close_meanwhile
    try:
        handle = eng.submit(greedy("raced"))
    except EngineDead:
        return
    with pytest.raises(EngineDead):
        handle.result(timeout=10)


def test_error_while_cancelling_fails_only_that_request(tiny_engine, monkeypatch):
    victim = Request("cancel me", SamplingParams(max_tokens=4000, ignore_eos=True))
    original = Engine._result

    def faulty(self, seq, reason):
        if seq.request is victim and reason == "cancelled":
            raise RecursionError("maximum recursion depth exceeded")  # as validate_output on deep JSON
        return original(self, seq, reason)

    monkeypatch.setattr(Engine, "_result", faulty)
    others = [tiny_engine.submit(Request(f"bystander {i}", SamplingParams(max_tokens=200, ignore_eos=True)))
              for i in range(3)]
    hv = tiny_engine.submit(victim)
    next(iter(hv))
    hv.cancel()
    with pytest.raises(RequestFailed, match="RecursionError"):
        hv.result(timeout=30)
    assert [h.result(timeout=60).usage.completion_tokens for h in others] == [200] * 3


def test_repeat_last_n_minus_one_penalises_the_whole_context(tiny_engine):
    """A logit bias makes token 4242 win every step; the repeat penalty, over the
    whole context for -1, soon stops it (llama.cpp alone reads -1 as "off")."""
    def tokens(last_n: int) -> list[int]:
        p = SamplingParams(temperature=0, max_tokens=40, repeat_penalty=3.0, repeat_last_n=last_n,
                           logit_bias={4242: 16.0}, ignore_eos=True)
        return tiny_engine.submit(Request("la la la la", p, cache_prompt=False)).result(timeout=30).tokens

    whole, off = tokens(-1), tokens(0)
    assert off == [4242] * 40
    assert whole == tokens(100_000) and whole.count(4242) < 10


def test_model_is_freed_when_the_context_cannot_be_made(tiny_model_path, monkeypatch):
    freed = []
    close = Model.close

    def fail(self, **kw):
        raise ModelLoadError("could not create a context (injected)")

    def record_close(self):
        freed.append(self.ptr is not None)
        close(self)

    monkeypatch.setattr(Model, "new_context", fail)
    monkeypatch.setattr(Model, "close", record_close)
    with pytest.raises(ModelLoadError, match="injected"):
        Engine(tiny_config(tiny_model_path))
    assert freed == [True]


def test_text_stream_joins_many_pieces():
    """Output text is kept as pieces joined on demand (a str += per token is
    quadratic); the joined text and the deltas agree."""
    s = TextStream(["<END>"])
    deltas = [s.feed(b"ab ") for _ in range(20_000)]
    deltas.append(s.flush())
    assert s.text == "ab " * 20_000 == "".join(deltas)
    assert len(s._emitted) == 1  # joined once, then reused


def test_bad_priority_is_rejected(tiny_engine):
    with pytest.raises(InvalidRequest, match="priority"):
        tiny_engine.submit(Request("x", priority=1.5))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def swa_model_path() -> Path:
    """Gemma-3 architecture, every layer with a sliding window of 8 tokens, f32."""
    return cached_tiny_model("f32", arch="gemma3", n_swa=8)


@pytest.mark.parametrize("swa_full", [False, True])
def test_sliding_window_prefix_sharing_matches_cold(swa_model_path, swa_full):
    """A cached parent that ran far past the shared prefix, in a small SWA cache
    (swa_full=False: 256 cells for 2 sequences), has lost the window a child
    would attend to: the child must re-process, not share, and its greedy tokens
    equal a cold run's. With a full-size cache it shares, with the same tokens."""
    prefix = "shared opening words " * 6
    cfg = tiny_config(swa_model_path, swa_full=swa_full, n_parallel=1, n_seq_cache=1, n_batch=32, n_ctx=1024)
    with Engine(cfg) as eng:
        child = prefix + "then the child goes its own way"
        cold = eng.submit(greedy(child, n=16, cache=False)).result(timeout=60)
        parent = eng.submit(greedy(prefix + "and the parent runs on " * 70, n=32)).result(timeout=60)
        warm = eng.submit(greedy(child, n=16)).result(timeout=60)
    assert parent.usage.prompt_tokens > 300
    assert warm.tokens == cold.tokens
    if swa_full:
        assert warm.usage.cached_tokens > 10
    else:
        assert warm.usage.cached_tokens == 0


def test_llama_log_is_quiet_unless_verbose(tiny_model_path):
    def complete(*flags: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "cli", *flags, "complete", "hi", "-n", "2", "--model", str(tiny_model_path)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=TESTS.parent)

    quiet, loud = complete(), complete("--verbose")
    assert quiet.returncode == 0 and loud.returncode == 0, quiet.stderr + loud.stderr
    assert "llama_model_loader" not in quiet.stderr and "load:" not in quiet.stderr, quiet.stderr
    assert "llama_model_loader" in loud.stderr
