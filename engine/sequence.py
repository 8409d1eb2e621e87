"""One request's life inside the engine: its tokens, KV position and the
per-request resources the engine thread owns (sampler chain, matcher, stream)."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

import llama_cpp

from .grammar import Matcher
from .handle import Handle
from .text_stream import TextStream
from .types import Request


class Status(enum.Enum):
    WAITING = "waiting"  # queued, no sequence id yet
    PREFILL = "prefill"  # prompt being decoded in chunks
    DECODE = "decode"  # generating one token per step
    CACHED = "cached"  # finished; KV kept as prefix cache


@dataclass(eq=False)
class Sequence:
    request: Request
    handle: Handle
    prompt: list[int]
    max_tokens: int
    stream: TextStream  # the output text, held back at stop strings
    matcher: Matcher | None = None  # structured output's grammar state
    submitted: float = field(default_factory=time.perf_counter)
    status: Status = Status.WAITING
    arrival: int = 0  # order of arrival in the scheduler's queue
    seq_id: int = -1
    tokens: list[int] = field(default_factory=list)  # generated so far
    n_past: int = 0  # the first n_past tokens of prompt + tokens are in the KV cache
    n_reused: int = 0  # prompt tokens shared from the cache
    admitted: float = 0.0
    first_token: float = 0.0
    batch_index: int = -1  # where this step's logits land, or -1
    sampler: llama_cpp.llama_sampler_p | None = None  # llama.cpp chain, set at admission; None on the fast path

    @property
    def n_prompt(self) -> int:
        return len(self.prompt)

    @property
    def n_generated(self) -> int:
        return len(self.tokens)

    @property
    def running(self) -> bool:
        return self.status in (Status.PREFILL, Status.DECODE)
