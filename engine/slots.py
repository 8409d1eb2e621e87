"""Sequence ids in one unified KV cache: which are free, which sequence holds
each, the prefixes they hold, who shares cells with whom, and LRU eviction of
finished sequences kept as prefix cache. Bookkeeping only: no admission policy."""

from __future__ import annotations

from collections import OrderedDict

import llama_cpp

from .prefix_cache import PrefixIndex
from .sequence import Sequence, Status


class KV:
    """The llama_memory operations the slots need."""

    def __init__(self, ctx: llama_cpp.llama_context_p):
        self.mem = llama_cpp.llama_get_memory(ctx)

    def remove(self, seq_id: int, start: int = 0) -> None:
        """Drop the sequence's cells from position start on."""
        llama_cpp.llama_memory_seq_rm(self.mem, seq_id, start, -1)

    def share(self, src: int, dst: int, n: int) -> None:
        """Let dst see src's cells for positions [0, n) (no copy in a unified cache)."""
        llama_cpp.llama_memory_seq_cp(self.mem, src, dst, 0, n)

    def pos_min(self, seq_id: int) -> int:
        """The lowest position the sequence still holds (-1: none); above 0 once a
        sliding-window cache has dropped the cells that fell out of the window."""
        return llama_cpp.llama_memory_seq_pos_min(self.mem, seq_id)

    def clear(self) -> None:
        llama_cpp.llama_memory_clear(self.mem, True)


class Slots:
    def __init__(self, kv: KV, n_seq: int):
        self.kv = kv
        self.free_ids: list[int] = list(range(n_seq - 1, -1, -1))
        self.by_id: dict[int, Sequence] = {}
        self.cached: OrderedDict[int, Sequence] = OrderedDict()  # LRU first
        self.index = PrefixIndex()
        self.shared_from: dict[int, int] = {}  # seq id -> parent id it shares cells with
        self.evictions = 0

    def cells(self, s: Sequence) -> int:
        """Cells this sequence adds beyond what it shares with a live parent."""
        shared = s.n_reused if s.seq_id in self.shared_from else 0
        return s.n_past - shared

    def cached_cells(self) -> int:
        return sum(self.cells(s) for s in self.cached.values())

    # -- taking an id --
    def take(self, keep: Sequence | None) -> int | None:
        """A free id, evicting the least recently used cached sequence but `keep` if needed."""
        if not self.free_ids and not self.evict_one(keep):
            return None
        seq_id = self.free_ids.pop()
        self.kv.remove(seq_id)
        return seq_id

    def adopt(self, src: Sequence, n: int) -> int:
        """Take over a cached sequence's id, keeping its first n cells (its KV is our prefix)."""
        seq_id = src.seq_id
        self._forget(src)
        self.free_ids.remove(seq_id)
        self.kv.remove(seq_id, n)
        return seq_id

    def assign(self, seq: Sequence, seq_id: int, src: Sequence | None, n_shared: int, index: bool) -> None:
        """Give seq the id; it sees src's first n_shared cells (already its own when adopted)."""
        if src is not None and src.seq_id >= 0 and n_shared > 0:
            self.kv.share(src.seq_id, seq_id, n_shared)
            self.shared_from[seq_id] = src.seq_id
            self.touch(src)
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
        self.touch(seq)

    def touch(self, seq: Sequence) -> None:
        if seq.seq_id in self.cached:
            self.cached.move_to_end(seq.seq_id)

    def evict_one(self, keep: Sequence | None = None) -> bool:
        for seq in self.cached.values():
            if seq is not keep:
                self.release(seq)
                self.evictions += 1
                return True
        return False

    def evict_all(self) -> int:
        n = len(self.cached)
        for seq in list(self.cached.values()):
            self.release(seq)
        self.evictions += n
        return n

    def release(self, seq: Sequence) -> None:
        """Free the sequence's id and cells."""
        sid = seq.seq_id
        if sid < 0 or self.by_id.get(sid) is not seq:
            return
        self._forget(seq)
        self.kv.remove(sid)

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
        self.kv.clear()
