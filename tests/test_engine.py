"""The engine on a real llama.cpp context (the tiny f32 model unless marked slow)."""

from __future__ import annotations

import threading
import time

import pytest

from engine import (
    Engine,
    EngineConfig,
    EngineDead,
    InvalidRequest,
    ModelLoadError,
    PromptTooLong,
    QueueFull,
    Request,
    RequestFailed,
    SamplingParams,
)
from engine.text_stream import TextStream
from jobs.chat import chat_for
from model_fixtures import tiny_config

GREEDY = dict(temperature=0.0)
PROMPTS = [
    ("The quick brown fox " * (i % 5 + 1)) + f"story number {i}: " + "once upon a time " * (i % 3)
    for i in range(16)
]


def greedy(prompt, max_tokens=24, **kw) -> Request:
    return Request(prompt, SamplingParams(temperature=0.0, max_tokens=max_tokens, **kw), cache_prompt=False)


def test_greedy_batched_equals_alone(tiny_engine):
    """16 prompts of different lengths, token-for-token identical alone and batched,
    including arrivals at different times (f32: llama.cpp is batch-invariant)."""
    alone = [tiny_engine.submit(greedy(p)).result(timeout=60).tokens for p in PROMPTS]

    handles = [None] * len(PROMPTS)

    def submit_late(i: int) -> None:
        time.sleep(0.002 * i)
        handles[i] = tiny_engine.submit(greedy(PROMPTS[i]))

    threads = [threading.Thread(target=submit_late, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    together = [h.result(timeout=60).tokens for h in handles]
    assert together == alone
    assert all(len(t) == 24 for t in alone)


def test_steps_pack_many_sequences(tiny_model_path):
    with Engine(tiny_config(tiny_model_path, n_parallel=8, n_batch=512)) as eng:
        hs = [eng.submit(greedy(p, max_tokens=32)) for p in PROMPTS[:8]]
        for h in hs:
            h.result(timeout=60)
        s = eng.stats()
    # 8 requests x 32 tokens in far fewer steps than one request per step would take
    assert s.generated_tokens == 8 * 32
    assert s.steps < 8 * 32 / 2
    assert s.batch_tokens / s.steps > 4


def test_stop_string_across_tokens_is_not_emitted(tiny_engine):
    full = tiny_engine.submit(greedy("Tell me a story", max_tokens=24)).result(timeout=60)
    pieces = [tiny_engine.detokenize([t]) for t in full.tokens]
    # A stop string spanning the boundary between the 3rd and 4th generated tokens.
    k = next(i for i in range(2, len(pieces) - 1) if pieces[i] and pieces[i + 1])
    before = "".join(pieces[:k])
    stop = pieces[k][-2:] + pieces[k + 1][:2]
    cut = (before + pieces[k] + pieces[k + 1]).find(stop)
    h = tiny_engine.submit(greedy("Tell me a story", max_tokens=24, stop=[stop]))
    deltas = list(h)
    r = h.result(timeout=60)
    assert r.finish_reason == "stop"
    assert r.text == (before + pieces[k] + pieces[k + 1])[:cut]
    assert "".join(deltas) == r.text
    assert stop not in r.text


def test_max_tokens_gives_length(tiny_engine):
    r = tiny_engine.submit(greedy("Count with me", max_tokens=5)).result(timeout=60)
    assert r.finish_reason == "length"
    assert r.usage.completion_tokens == 5
    assert r.usage.prompt_tokens == len(tiny_engine.tokenize("Count with me"))


def test_deltas_join_to_text_and_timings(tiny_engine):
    h = tiny_engine.submit(Request("Hello", SamplingParams(temperature=0.9, seed=7, max_tokens=16)))
    assert "".join(h) == h.result(timeout=60).text
    r = h.result(timeout=60)
    assert 0 <= r.timings.queue_ms <= r.timings.ttft_ms <= r.timings.total_ms


def test_seed_reproducible(tiny_engine):
    a = tiny_engine.submit(Request("Hi", SamplingParams(temperature=1.0, seed=42, max_tokens=12))).result(timeout=60)
    b = tiny_engine.submit(Request("Hi", SamplingParams(temperature=1.0, seed=42, max_tokens=12))).result(timeout=60)
    c = tiny_engine.submit(Request("Hi", SamplingParams(temperature=1.0, seed=43, max_tokens=12))).result(timeout=60)
    assert a.tokens == b.tokens
    assert a.tokens != c.tokens


def test_cancel_mid_generation_frees_the_sequence(tiny_engine):
    h = tiny_engine.submit(Request("Go on forever", SamplingParams(max_tokens=4000, ignore_eos=True)))
    it = iter(h)
    next(it)
    h.cancel()
    r = h.result(timeout=10)
    assert r.finish_reason == "cancelled"
    assert r.usage.completion_tokens < 4000
    assert tiny_engine.stats().running == 0
    # the engine goes on serving
    assert tiny_engine.submit(greedy("after cancel", max_tokens=3)).result(timeout=60).finish_reason == "length"


def test_queue_full_is_an_error(tiny_model_path):
    with Engine(tiny_config(tiny_model_path, n_parallel=1, max_waiting=2)) as eng:
        long = SamplingParams(max_tokens=2000, ignore_eos=True)
        hs = []
        with pytest.raises(QueueFull, match="queue is full"):
            for _ in range(10):
                hs.append(eng.submit(Request("x", long)))
        for h in hs:
            h.cancel()


def test_prompt_too_long_names_both_numbers(tiny_model_path):
    with Engine(tiny_config(tiny_model_path, n_ctx=512, n_parallel=2)) as eng:
        with pytest.raises(PromptTooLong) as e:
            eng.submit(Request("word " * 2000))
        assert e.value.n_prompt > 2000 and e.value.n_limit == 511
        assert str(e.value.n_prompt) in str(e.value) and "511" in str(e.value)


@pytest.mark.parametrize(
    "params, param",
    [
        (dict(temperature=-1), "temperature"),
        (dict(top_p=0), "top_p"),
        (dict(max_tokens=0), "max_tokens"),
        (dict(top_k=-3), "top_k"),
        (dict(logit_bias={10**7: 1.0}), "logit_bias"),
        (dict(presence_penalty=5), "presence_penalty"),
        (dict(temperature=float("nan")), "temperature"),
    ],
)
def test_bad_sampling_parameters(tiny_engine, params, param):
    with pytest.raises(InvalidRequest) as e:
        tiny_engine.submit(Request("hi", SamplingParams(**params)))
    assert e.value.param == param
    assert param in str(e.value)


def test_empty_prompt_rejected(tiny_engine):
    with pytest.raises(InvalidRequest, match="empty"):
        tiny_engine.submit(Request(""))


def test_missing_model_names_path(tmp_path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelLoadError, match=str(missing)):
        Engine(EngineConfig(model_path=missing))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf")
    with pytest.raises(ModelLoadError, match="bad.gguf"):
        Engine(EngineConfig(model_path=bad))


def test_utf8_split_across_tokens_is_never_broken():
    s = TextStream([])
    data = "日本語 ok é".encode()
    out = [s.feed(data[i : i + 1]) for i in range(len(data))]
    assert "".join(out) + s.flush() == "日本語 ok é"
    assert all("\ufffd" not in piece for piece in out)
    assert out[0] == "" and out[2] == "日"


def test_stop_held_back_then_released():
    s = TextStream(["STOP"])
    assert s.feed(b"abc ST") == "abc "
    assert s.feed(b"x") == "STx"
    assert s.feed(b" ST") == " "
    assert s.feed(b"OP tail") == ""
    assert s.stopped and s.text == "abc STx "


def test_utf8_generated_text_is_valid(tiny_engine):
    # The random model emits arbitrary tokens, byte-fallback pieces included.
    for seed in range(4):
        h = tiny_engine.submit(Request("日本語のテキスト", SamplingParams(temperature=1.5, seed=seed, max_tokens=32)))
        deltas = list(h)
        assert "".join(deltas) == h.result(timeout=60).text
        assert not any("\ud800" <= ch <= "\udfff" for ch in "".join(deltas))  # no lone surrogates


def test_embeddings_shape_and_norm(tiny_engine):
    vecs = tiny_engine.embed(["hello world", "another text", "hello world"])
    dim = tiny_engine.model.n_embd
    assert len(vecs) == 3 and all(len(v) == dim for v in vecs)
    for v in vecs:
        assert abs(sum(x * x for x in v) - 1.0) < 1e-4
    assert vecs[0] == pytest.approx(vecs[2], abs=1e-5)
    assert vecs[0] != pytest.approx(vecs[1], abs=1e-3)
    alone = tiny_engine.embed(["another text"])[0]
    assert alone == pytest.approx(vecs[1], abs=1e-4)


def test_embeddings_concurrent_callers(tiny_engine):
    texts = [f"text {i}" for i in range(24)]
    expected = tiny_engine.embed(texts)
    out = [None] * len(texts)

    def one(i):
        out[i] = tiny_engine.embed([texts[i]])[0]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for a, b in zip(out, expected):
        assert a == pytest.approx(b, abs=1e-4)


def test_embedding_errors(tiny_engine):
    with pytest.raises(InvalidRequest, match=r"input\[1\] is empty"):
        tiny_engine.embed(["ok", ""])


def test_chat_fallback_template(tiny_engine):
    chat = chat_for(tiny_engine)
    assert not chat.has_template
    prompt = chat.render([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert prompt == "Be brief.\n\nUser: Hi\nAssistant:"
    assert chat.stop == ["\nUser:"]
    with pytest.raises(InvalidRequest, match=r"messages\[0\].role"):
        chat.render([{"role": "robot", "content": "x"}])


def test_error_in_one_request_fails_only_that_request(tiny_engine, monkeypatch):
    victim = greedy("victim prompt", max_tokens=20)
    original = Engine._advance

    def faulty(self, seq, token):
        if seq.request is victim and seq.n_generated == 3:
            raise RuntimeError("injected fault")
        return original(self, seq, token)

    monkeypatch.setattr(Engine, "_advance", faulty)
    others = [tiny_engine.submit(greedy(p, max_tokens=20)) for p in PROMPTS[:4]]
    hv = tiny_engine.submit(victim)
    with pytest.raises(RequestFailed, match="injected fault"):
        hv.result(timeout=30)
    assert all(h.result(timeout=30).usage.completion_tokens == 20 for h in others)
    assert tiny_engine.alive


def test_engine_death_reaches_every_waiting_handle(tiny_model_path, monkeypatch):
    eng = Engine(tiny_config(tiny_model_path, n_parallel=2))
    started = threading.Event()

    def dying_step(self):
        started.wait(5)
        raise SystemExit("simulated crash")

    monkeypatch.setattr(Engine, "_step", dying_step)
    hs = [eng.submit(greedy("x")) for _ in range(5)]
    started.set()
    for h in hs:
        with pytest.raises(EngineDead, match="simulated crash"):
            h.result(timeout=10)
    with pytest.raises(EngineDead):
        eng.submit(greedy("y"))
    eng.close()


def test_out_of_range_token_ids_are_rejected(tiny_engine):
    n = tiny_engine.model.n_vocab
    with pytest.raises(InvalidRequest, match="token ids"):
        tiny_engine.detokenize([1, n + 10])
    with pytest.raises(InvalidRequest, match="token ids"):
        tiny_engine.submit(Request([2, n]))
    with pytest.raises(InvalidRequest, match="token ids"):
        tiny_engine.submit(Request([2, -1]))


def test_waiting_requests_start_in_priority_then_arrival_order(tiny_model_path):
    """One slot, busy: a later urgent request (priority 0) starts before earlier batch
    ones (priority 1), which keep their arrival order among themselves."""
    with Engine(tiny_config(tiny_model_path, n_parallel=1)) as eng:
        blocker = eng.submit(Request("hold the slot", SamplingParams(max_tokens=4000, ignore_eos=True)))
        next(iter(blocker))  # running: everything below waits

        def req(priority: int) -> Request:
            return Request("queued", SamplingParams(temperature=0, max_tokens=4), priority=priority)

        batch_a, batch_b, urgent = eng.submit(req(1)), eng.submit(req(1)), eng.submit(req(0))
        blocker.cancel()
        # With one slot, a request can only start once the one before it finished.
        batch_a.result(timeout=30)
        assert urgent.done
        batch_b.result(timeout=30)
        assert batch_a.done
        with pytest.raises(InvalidRequest, match="priority"):
            eng.submit(Request("x", priority="high"))  # type: ignore[arg-type]
