"""Plain data passed in and out of the engine."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length", "cancelled"]  # a failed request raises instead

_ids = itertools.count(1)


@dataclass
class Constraint:
    """Structured-output constraint on generated text.

    kind: "json_object" (any JSON object), "json_schema" (value: a schema dict),
    "gbnf" (value: GBNF grammar text) or "lark" (value: Lark grammar text).
    """

    kind: Literal["json_object", "json_schema", "gbnf", "lark"]
    value: Any = None


@dataclass
class SamplingParams:
    temperature: float = 0.8  # 0 = greedy
    top_k: int = 40  # 0 = off
    top_p: float = 0.95  # 1 = off
    min_p: float = 0.05  # 0 = off
    seed: int | None = None
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    max_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    constraint: Constraint | None = None


@dataclass
class Request:
    """One generation request. prompt is text (tokenised with the model's
    special-token handling, BOS added when the model wants it) or token ids."""

    prompt: str | list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    cache_prompt: bool = True
    priority: int = 0  # smaller is more urgent: waiting requests start in (priority, arrival) order
    id: int = field(default_factory=lambda: next(_ids))


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens taken from the KV cache, not computed


@dataclass
class Timings:
    queue_ms: float = 0.0  # submit -> admitted into a sequence
    ttft_ms: float = 0.0  # submit -> first generated token
    total_ms: float = 0.0  # submit -> finished


@dataclass
class Result:
    text: str
    finish_reason: FinishReason
    usage: Usage
    timings: Timings
    tokens: list[int] = field(default_factory=list)
    # For constrained output cut short by max_tokens: the text is not complete.
    incomplete: bool = False


@dataclass
class EngineStats:
    requests_finished: int = 0
    prompt_tokens_computed: int = 0
    prompt_tokens_reused: int = 0
    generated_tokens: int = 0
    evictions: int = 0
    steps: int = 0
    batch_tokens: int = 0  # summed over steps: mean batch = batch_tokens / steps
    # Summed over steps that decoded: wall time, and CPU time (the engine thread and its sampling pool).
    step_ms: float = 0.0
    decode_ms: float = 0.0  # of which in llama_decode
    sample_ms: float = 0.0  # of which picking tokens from the logits
    step_cpu_ms: float = 0.0
    decode_cpu_ms: float = 0.0
    sample_cpu_ms: float = 0.0
    waiting: int = 0
    running: int = 0
