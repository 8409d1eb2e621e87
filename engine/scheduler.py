"""Which sequences run, which prefixes they share, and what goes in each batch.

Sequence ids are slots in one unified KV cache. A running sequence holds one;
a finished one keeps its id as prefix cache (CACHED) until evicted, least
recently used first. KV cells are accounted with a conservative estimate plus
per-request reservations (prompt + max_tokens), so decodes do not run out of
cells; the engine still handles a failed decode by evicting and retrying."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass

import llama_cpp

from .prefix_cache import PrefixIndex
from .sequence import Sequence, Status

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


class KV:
    """The llama_memory operations the scheduler needs."""

    def __init__(self, ctx: llama_cpp.llama_context_p):
        self.mem = llama_cpp.llama_get_memory(ctx)

    def remove(self, seq_id: int) -> None:
        llama_cpp.llama_memory_seq_rm(self.mem, seq_id, -1, -1)

    def share(self, src: int, dst: int, n: int) -> None:
        """Let dst see src's cells for positions [0, n) (no copy in a unified cache)."""
        llama_cpp.llama_memory_seq_cp(self.mem, src, dst, 0, n)

    def clear(self) -> None:
        llama_cpp.llama_memory_clear(self.mem, True)


class Scheduler:
    def __init__(self, kv: KV, *, n_ctx: int, n_parallel: int, n_seq: int, n_batch: int, share: bool = True):
        self.kv = kv
        self.share = share
        self.n_ctx = n_ctx
        self.n_parallel = n_parallel
        self.n_batch = n_batch
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.cached: OrderedDict[int, Sequence] = OrderedDict()  # LRU first
        self.free_ids: list[int] = list(range(n_seq - 1, -1, -1))
        self.by_id: dict[int, Sequence] = {}
        self.index = PrefixIndex()
        self.evictions = 0
        self._shared_from: dict[int, int] = {}  # seq id -> parent id it shares cells with

    # -- accounting --
    def _cells(self, s: Sequence) -> int:
        """Cells this sequence adds beyond what it shares with a live parent."""
        shared = s.n_reused if s.seq_id in self._shared_from else 0
        return s.n_past - shared

    def _reserved(self, s: Sequence) -> int:
        # Once decoding, n_past passes n_prompt: only the output is still to come.
        return max(0, s.n_prompt - s.n_past) + min(RESERVE_MAX, max(0, s.max_tokens - s.n_generated))

    def committed(self) -> int:
        resident = [*self.running, *self.cached.values()]
        return sum(self._cells(s) for s in resident) + sum(self._reserved(s) for s in self.running)

    # -- admission --
    def admit(self) -> list[Sequence]:
        admitted = []
        deferred: list[Sequence] = []
        while self.waiting and len(self.running) < self.n_parallel:
            seq = self.waiting.popleft()
            verdict = self._try_admit(seq)
            if verdict == "admitted":
                admitted.append(seq)
            elif verdict == "wait_leader":
                deferred.append(seq)
            else:  # no room: keep order, try again next step
                self.waiting.appendleft(seq)
                break
        self.waiting.extendleft(reversed(deferred))
        return admitted

    def _match(self, seq: Sequence) -> tuple[Sequence | None, int, int]:
        """(source, usable now, worth waiting for) for the longest cached prefix."""
        if not (self.share and seq.request.cache_prompt):
            return None, 0, 0
        limit = seq.n_prompt - 1  # the last prompt token must be decoded for logits
        length, ids = self.index.longest_match(seq.prompt)
        length = min(length, limit)
        if length <= 0:
            return None, 0, 0
        src = max((self.by_id[i] for i in ids), key=lambda s: s.n_past)
        return src, min(length, src.n_past), length

    def _try_admit(self, seq: Sequence) -> str:
        src, usable, potential = self._match(seq)
        if src is not None and src.prefilling and potential - usable >= MIN_SHARED_WAIT:
            return "wait_leader"  # re-matched next step, when the leader has prefilled more
        need = (seq.n_prompt - usable) + min(RESERVE_MAX, seq.max_tokens)
        if not self._make_room(need, keep=src):
            return "no_room"
        seq_id = self._take_id(keep=src)
        if seq_id is None:
            return "no_room"
        self.kv.remove(seq_id)
        if src is not None and usable > 0:
            self.kv.share(src.seq_id, seq_id, usable)
            self._shared_from[seq_id] = src.seq_id
            self._touch(src)
        seq.seq_id, seq.n_past, seq.n_reused = seq_id, usable, usable
        seq.status = Status.PREFILL
        seq.admitted = time.perf_counter()
        self.by_id[seq_id] = seq
        self.running.append(seq)
        if self.share and seq.request.cache_prompt:
            self.index.extend(seq_id, seq.prompt)
        return "admitted"

    def _make_room(self, need: int, keep: Sequence | None) -> bool:
        while self.committed() + need > self.n_ctx:
            if not self._evict_one(keep):
                # Nothing left to evict: admit anyway if nothing else runs (it will
                # stop at the context limit); otherwise wait for running ones to end.
                return not self.running
        return True

    def _take_id(self, keep: Sequence | None) -> int | None:
        if not self.free_ids and not self._evict_one(keep):
            return None
        return self.free_ids.pop()

    def _evict_one(self, keep: Sequence | None = None) -> bool:
        for seq_id, seq in self.cached.items():
            if seq is not keep:
                self._release(seq)
                self.evictions += 1
                return True
        return False

    def evict_all(self) -> int:
        n = len(self.cached)
        for seq in list(self.cached.values()):
            self._release(seq)
        self.evictions += n
        return n

    def _touch(self, seq: Sequence) -> None:
        if seq.seq_id in self.cached:
            self.cached.move_to_end(seq.seq_id)

    # -- per step --
    def plan(self) -> list[Chunk]:
        """One token per decoding sequence, then prompt chunks up to the token budget."""
        chunks = [
            Chunk(s, [s.tokens[-1]], s.n_past, True) for s in self.running if s.status is Status.DECODE
        ]
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

    # -- endings --
    def finish(self, seq: Sequence) -> None:
        """A running sequence ended: keep its KV as prefix cache, or free it."""
        self.running.remove(seq)
        if self.share and seq.request.cache_prompt and seq.n_past > 0:
            self.index.truncate(seq.seq_id, seq.n_past)  # the last sampled token never reached the KV
            seq.status = Status.CACHED
            self.cached[seq.seq_id] = seq
            self._touch(seq)
        else:
            self._release(seq)

    def drop(self, seq: Sequence) -> None:
        """Remove a sequence wherever it is (failure, cancel while waiting)."""
        if seq in self.waiting:
            self.waiting.remove(seq)
            return
        if seq in self.running:
            self.running.remove(seq)
        if seq.seq_id >= 0:
            self._release(seq)

    def _release(self, seq: Sequence) -> None:
        sid = seq.seq_id
        if sid < 0 or self.by_id.get(sid) is not seq:
            return
        self.kv.remove(sid)
        self.index.remove(sid)
        self.cached.pop(sid, None)
        del self.by_id[sid]
        self._shared_from.pop(sid, None)
        # Children that shared this sequence's cells now own them in the estimate.
        for child, parent in list(self._shared_from.items()):
            if parent == sid:
                del self._shared_from[child]
        self.free_ids.append(sid)
        seq.seq_id = -1

    def reset(self) -> None:
        """Forget every resident sequence and clear the KV cache (after a fatal step)."""
        for seq in [*self.running, *self.cached.values()]:
            self._release(seq)
        self.running.clear()
        self.kv.clear()
