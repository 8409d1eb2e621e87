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
    submitted: float = field(default_factory=time.perf_counter)
    status: Status = Status.WAITING
    arrival: int = 0  # order of arrival in the scheduler's queue
    seq_id: int = -1
    tokens: list[int] = field(default_factory=list)  # prompt + generated
    n_past: int = 0  # tokens[:n_past] are in the KV cache
    n_reused: int = 0  # prompt tokens shared from the cache
    n_generated: int = 0
    admitted: float = 0.0
    first_token: float = 0.0
    batch_index: int = -1  # where this step's logits land, or -1
    # Engine-thread resources, set up at admission and freed at the end:
    sampler: llama_cpp.llama_sampler_p | None = None  # llama.cpp chain; None on the greedy fast path
    matcher: Matcher | None = None
    stream: TextStream | None = None

    def __post_init__(self) -> None:
        self.tokens = list(self.prompt)

    @property
    def n_prompt(self) -> int:
        return len(self.prompt)

    @property
    def prefilling(self) -> bool:
        return self.status is Status.PREFILL

    @property
    def running(self) -> bool:
        return self.status in (Status.PREFILL, Status.DECODE)
