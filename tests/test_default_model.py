"""End-to-end runs on the bundled default model (Gemma 3 270M, Q4_K_M)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engine import Request, SamplingParams
from jobs.chat import ChatTemplate

pytestmark = pytest.mark.slow

PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):",
    "The three primary colors are",
    "Water boils at a temperature of",
    "My favourite recipe for bread starts with",
]


def test_default_model_completes_sensibly(default_engine):
    r = default_engine.submit(Request("The Eiffel Tower is in the city of", SamplingParams(temperature=0, max_tokens=8))).result(timeout=300)
    assert "Paris" in r.text
    assert r.usage.completion_tokens <= 8


def test_batched_tokens_pass_teacher_forcing(default_engine, default_model_path):
    """Quantized kernels are not batch-invariant, so compare by teacher forcing:
    every token of the batched run must be within a small margin of the best
    logit of a lone run given the same history."""
    from llama_cpp import Llama

    handles = [
        default_engine.submit(Request(p, SamplingParams(temperature=0, max_tokens=12), cache_prompt=False))
        for p in PROMPTS
    ]
    results = [h.result(timeout=300) for h in handles]
    llm = Llama(model_path=str(default_model_path), n_ctx=512, logits_all=True, verbose=False)
    worst = 0.0
    for prompt, r in zip(PROMPTS, results):
        tokens = default_engine.tokenize(prompt)
        llm.reset()
        llm.eval(tokens + r.tokens[:-1])
        for i, tok in enumerate(r.tokens):
            logits = llm.scores[len(tokens) - 1 + i]
            worst = max(worst, float(logits.max() - logits[tok]))
    llm.close()
    assert worst < 0.5


def test_multibyte_output_streams_whole_characters(default_engine):
    h = default_engine.submit(
        Request("日本の首都は東京です。日本の有名な食べ物は", SamplingParams(temperature=0, max_tokens=24))
    )
    deltas = list(h)
    text = h.result(timeout=300).text
    assert "".join(deltas) == text
    assert any(ord(c) > 0x3000 for c in text)  # it does write Japanese
    assert "\ufffd" not in text


def test_cli_complete_runs_on_the_default_model():
    out = subprocess.run(
        [sys.executable, "-m", "cli", "complete", "One, two, three, four,", "-n", "6", "-t", "0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "five" in out.stdout


def test_chat_template_rendering():
    chatml = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    t = ChatTemplate(chatml, "<s>", "</s>")
    out = t.render([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    assert out == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
