"""Which sequences run, which cached prefix each starts from, and what goes in
each batch: the admission and planning policy over the slots' bookkeeping.

KV cells are accounted with a conservative estimate plus per-request
reservations (prompt + max_tokens), so decodes do not run out of cells; the
engine still handles a failed decode by evicting and retrying."""

from __future__ import annotations

import bisect
import itertools
import time
from dataclasses import dataclass

from .sequence import Sequence, Status
from .slots import Slots

# A follower waits for a leader's prompt only when that saves at least this many tokens.
MIN_SHARED_WAIT = 16
# Room reserved for a request's output. Capped, so one request with a huge
# max_tokens does not hold the whole cache; past the cap it takes its chances.
RESERVE_MAX = 1024


@dataclass
class Chunk:
    seq: Sequence
    tokens: list[int]
    start: int  # KV position of tokens[0]
    logits: bool  # sample after this chunk


class Scheduler:
    def __init__(self, slots: Slots, *, n_ctx: int, n_parallel: int, n_batch: int, share: bool = True, n_swa: int = 0):
        self.slots = slots
        self.share = share
        self.n_ctx = n_ctx
        self.n_parallel = n_parallel
        self.n_batch = n_batch
        self.n_swa = n_swa  # sliding window whose old cells the cache drops (0: it keeps them all)
        self.waiting: list[Sequence] = []  # in (priority, arrival) order
        self.running: list[Sequence] = []
        self._arrivals = itertools.count()

    @property
    def evictions(self) -> int:
        return self.slots.evictions

    def evict_all(self) -> int:
        return self.slots.evict_all()

    # -- accounting --
    def _reserved(self, s: Sequence) -> int:
        # Once decoding, n_past passes n_prompt: only the output is still to come.
        return max(0, s.n_prompt - s.n_past) + min(RESERVE_MAX, max(0, s.max_tokens - s.n_generated))

    def committed(self) -> int:
        running = sum(self.slots.cells(s) + self._reserved(s) for s in self.running)
        return running + self.slots.cached_cells()

    # -- admission --
    def add(self, seq: Sequence) -> None:
        """Queue a request behind every waiting one of the same or a more urgent priority."""
        seq.arrival = next(self._arrivals)
        bisect.insort(self.waiting, seq, key=lambda s: (s.request.priority, s.arrival))

    def admit(self) -> list[Sequence]:
        admitted = []
        deferred: list[Sequence] = []
        while self.waiting and len(self.running) < self.n_parallel:
            seq = self.waiting.pop(0)
            verdict = self._try_admit(seq)
            if verdict == "admitted":
                admitted.append(seq)
            elif verdict == "wait_leader":
                deferred.append(seq)
            else:  # no room: keep order, try again next step
                self.waiting.insert(0, seq)
                break
        self.waiting[:0] = deferred  # they were ahead of every request still waiting
        return admitted

    def _caches(self, seq: Sequence) -> bool:
        return self.share and seq.request.cache_prompt

    def _match(self, seq: Sequence) -> tuple[Sequence | None, int, int]:
        """(source, usable now, worth waiting for) for the longest cached prefix."""
        if not self._caches(seq):
            return None, 0, 0
        limit = seq.n_prompt - 1  # the last prompt token must be decoded for logits
        length, ids = self.slots.index.longest_match(seq.prompt)
        length = min(length, limit)
        sources = [s for s in (self.slots.by_id[i] for i in ids) if self._window_intact(s, min(length, s.n_past))]
        if length <= 0 or not sources:
            return None, 0, 0
        src = max(sources, key=lambda s: s.n_past)
        return src, min(length, src.n_past), length

    def _window_intact(self, src: Sequence, n: int) -> bool:
        """Whether src still holds the cells a child continuing at position n attends
        to; a sliding-window cache drops older ones (llama-server's pos_min check)."""
        return not self.n_swa or self.slots.pos_min(src.seq_id) <= max(0, n - self.n_swa)

    def _try_admit(self, seq: Sequence) -> str:
        src, usable, potential = self._match(seq)
        if src is not None and src.status is Status.PREFILL and potential - usable >= MIN_SHARED_WAIT:
            return "wait_leader"  # re-matched next step, when the leader has prefilled more
        need = (seq.n_prompt - usable) + min(RESERVE_MAX, seq.max_tokens)
        if not self._make_room(need, keep=src):
            return "no_room"
        seq_id = self.slots.take(keep=src)
        if seq_id is None:
            if src is None or src.status is not Status.CACHED:
                return "no_room"
            seq_id = self.slots.adopt(src, usable)  # the last id holds our prefix: take it over
        self.slots.assign(seq, seq_id, src, usable, index=self._caches(seq))
        seq.status = Status.PREFILL
        seq.admitted = time.perf_counter()
        self.running.append(seq)
        return "admitted"

    def _make_room(self, need: int, keep: Sequence | None) -> bool:
        while self.committed() + need > self.n_ctx:
            if not self.slots.evict_one(keep):
                # Nothing left to evict: admit anyway if nothing else runs (it will
                # stop at the context limit); otherwise wait for running ones to end.
                return not self.running
        return True

    # -- per step --
    def plan(self) -> list[Chunk]:
        """One token per decoding sequence, then prompt chunks up to the token budget."""
        chunks = [Chunk(s, [s.tokens[-1]], s.n_past, True) for s in self.running if s.status is Status.DECODE]
        budget = self.n_batch - len(chunks)
        for s in self.running:
            if budget <= 0:
                break
            if s.status is Status.PREFILL:
                take = min(s.n_prompt - s.n_past, budget)
                end = s.n_past + take
                chunks.append(Chunk(s, s.prompt[s.n_past : end], s.n_past, end == s.n_prompt))
                budget -= take
        return chunks

    def advance(self, chunk: Chunk) -> None:
        """The chunk's tokens are in the KV cache now."""
        seq = chunk.seq
        seq.n_past += len(chunk.tokens)
        if seq.status is Status.DECODE and self._caches(seq):  # prompt tokens were indexed at admission
            self.slots.index.extend(seq.seq_id, chunk.tokens)

    # -- endings --
    def finish(self, seq: Sequence) -> None:
        """A running sequence ended: keep its KV as prefix cache, or free it."""
        self.running.remove(seq)
        if self._caches(seq) and seq.n_past > 0:
            self.slots.keep_cached(seq)
        else:
            self.slots.release(seq)

    def drop(self, seq: Sequence) -> None:
        """Remove a sequence wherever it is (failure, cancel while waiting)."""
        if seq in self.waiting:
            self.waiting.remove(seq)
            return
        if seq in self.running:
            self.running.remove(seq)
        self.slots.release(seq)

    def reset(self) -> None:
        """Forget every resident sequence and clear the KV cache (after a fatal step)."""
        self.running.clear()
        self.slots.clear()
