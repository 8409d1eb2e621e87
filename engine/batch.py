"""A llama_batch whose arrays are numpy buffers we own: prompt chunks are written
with one slice assignment instead of a ctypes call per token."""

from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np


class Batch:
    def __init__(self, capacity: int):
        self.token = np.zeros(capacity, dtype=np.int32)
        self.pos = np.zeros(capacity, dtype=np.int32)
        self.n_seq_id = np.ones(capacity, dtype=np.int32)
        self.seq = np.zeros(capacity, dtype=np.int32)
        self.logits = np.zeros(capacity, dtype=np.int8)
        i32p = ctypes.POINTER(ctypes.c_int32)
        base = self.seq.ctypes.data
        # seq_id[i] points at self.seq[i]: one sequence id per token.
        self._seq_ptrs = (i32p * capacity)(*(ctypes.cast(base + 4 * i, i32p) for i in range(capacity)))
        self.struct = llama_cpp.llama_batch(
            n_tokens=0,
            token=self.token.ctypes.data_as(i32p),
            embd=None,
            pos=self.pos.ctypes.data_as(i32p),
            n_seq_id=self.n_seq_id.ctypes.data_as(i32p),
            seq_id=self._seq_ptrs,
            logits=self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
        )
        self.n = 0

    def clear(self) -> None:
        self.n = 0

    def add(self, tokens: list[int], start_pos: int, seq_id: int, logits_last: bool) -> int:
        """Append tokens of one sequence at consecutive positions; return the
        batch index of the last one (where its logits land if requested)."""
        k = len(tokens)
        i, j = self.n, self.n + k
        self.token[i:j] = tokens
        self.pos[i:j] = np.arange(start_pos, start_pos + k, dtype=np.int32)
        self.seq[i:j] = seq_id
        self.logits[i:j] = 0
        self.logits[j - 1] = logits_last
        self.n = j
        return j - 1

    def as_llama(self) -> llama_cpp.llama_batch:
        self.struct.n_tokens = self.n
        return self.struct
