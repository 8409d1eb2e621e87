"""Sequence ids in one unified KV cache: which are free, which sequence holds
each, the prefixes they hold, who shares cells with whom, and LRU eviction of
finished sequences kept as prefix cache. Bookkeeping only: no admission policy."""

from __future__ import annotations

from collections import OrderedDict

import llama_cpp

from .prefix_cache import PrefixIndex
from .sequence import Sequence, Status


class Slots:
    def __init__(self, ctx: llama_cpp.llama_context_p, n_seq: int):
        self.mem = llama_cpp.llama_get_memory(ctx)
        self.free_ids: list[int] = list(range(n_seq - 1, -1, -1))
        self.by_id: dict[int, Sequence] = {}
        self.cached: OrderedDict[int, Sequence] = OrderedDict()  # LRU first
        self.index = PrefixIndex()
        self.shared_from: dict[int, int] = {}  # seq id -> parent id it shares cells with
        self.evictions = 0

    def pos_min(self, seq_id: int) -> int:
        """The lowest position the sequence still holds (-1: none); above 0 once a
        sliding-window cache has dropped the cells that fell out of the window."""
        return llama_cpp.llama_memory_seq_pos_min(self.mem, seq_id)

    def _remove(self, seq_id: int, start: int = 0) -> None:
        llama_cpp.llama_memory_seq_rm(self.mem, seq_id, start, -1)

    def cells(self, s: Sequence) -> int:
        """Cells this sequence adds beyond what it shares with a live parent."""
        return s.n_past - (s.n_reused if s.seq_id in self.shared_from else 0)

    def cached_cells(self) -> int:
        return sum(self.cells(s) for s in self.cached.values())

    # -- taking an id --
    def take(self, keep: Sequence | None) -> int | None:
        """A free id, evicting the least recently used cached sequence but `keep` if needed."""
        if not self.free_ids and not self.evict_one(keep):
            return None
        seq_id = self.free_ids.pop()
        self._remove(seq_id)
        return seq_id

    def adopt(self, src: Sequence, n: int) -> int:
        """Take over a cached sequence's id, keeping its first n cells (its KV is our prefix)."""
        seq_id = src.seq_id
        self._forget(src)
        self.free_ids.remove(seq_id)
        self._remove(seq_id, n)
        return seq_id

    def assign(self, seq: Sequence, seq_id: int, src: Sequence | None, n_shared: int, index: bool) -> None:
        """Give seq the id; it sees src's first n_shared cells (already its own when adopted)."""
        if src is not None and src.seq_id >= 0 and n_shared > 0:
            llama_cpp.llama_memory_seq_cp(self.mem, src.seq_id, seq_id, 0, n_shared)  # shared, not copied: unified KV
            self.shared_from[seq_id] = src.seq_id
            if src.seq_id in self.cached:  # most recently used
                self.cached.move_to_end(src.seq_id)
        seq.seq_id, seq.n_past, seq.n_reused = seq_id, n_shared, n_shared
        self.by_id[seq_id] = seq
        if index:
            self.index.extend(seq_id, seq.prompt)

    # -- keeping and evicting --
    def keep_cached(self, seq: Sequence) -> None:
        """A finished sequence stays resident as prefix cache, most recently used."""
        self.index.truncate(seq.seq_id, seq.n_past)  # the last sampled token never reached the KV
        seq.status = Status.CACHED
        self.cached[seq.seq_id] = seq

    def evict_one(self, keep: Sequence | None = None) -> bool:
        for seq in self.cached.values():
            if seq is not keep:
                self.release(seq)
                self.evictions += 1
                return True
        return False

    def evict_all(self) -> int:
        n = len(self.cached)
        while self.evict_one():
            pass
        return n

    def release(self, seq: Sequence) -> None:
        """Free the sequence's id and cells."""
        sid = seq.seq_id
        if sid < 0 or self.by_id.get(sid) is not seq:
            return
        self._forget(seq)
        self._remove(sid)

    def _forget(self, seq: Sequence) -> None:
        sid = seq.seq_id
        self.index.remove(sid)
        self.cached.pop(sid, None)
        del self.by_id[sid]
        self.shared_from.pop(sid, None)
        # Children that shared this sequence's cells now own them in the estimate.
        for child, parent in list(self.shared_from.items()):
            if parent == sid:
                del self.shared_from[child]
        self.free_ids.append(sid)
        seq.seq_id = -1

    def clear(self) -> None:
        for seq in list(self.by_id.values()):
            self.release(seq)
        llama_cpp.llama_memory_clear(self.mem, True)
