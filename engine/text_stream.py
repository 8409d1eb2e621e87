"""Incremental detokenisation with stop strings.

Bytes from tokens are decoded incrementally, so a UTF-8 character split across
tokens is emitted only once complete. Text that could be the start of a stop
string is held back until it is known not to be one; the stop string itself is
never emitted."""

from __future__ import annotations

import codecs


class TextStream:
    def __init__(self, stop: list[str]):
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = [s for s in stop if s]
        self._hold = max((len(s) for s in self._stop), default=0)
        self._pending = ""  # decoded, not yet emitted
        self._emitted: list[str] = []  # joined on demand: += on a str is quadratic over long outputs
        self.stopped = False

    @property
    def text(self) -> str:
        """Everything emitted so far."""
        if len(self._emitted) > 1:
            self._emitted[:] = ["".join(self._emitted)]
        return self._emitted[0] if self._emitted else ""

    def feed(self, data: bytes) -> str:
        """Add a token's bytes; return the text that may be emitted now."""
        if self.stopped:
            return ""
        self._pending += self._decoder.decode(data)
        if not self._stop:
            return self._emit(len(self._pending))
        # Search only where a new match can start: the held-back tail plus the new text.
        cut = self._find_stop()
        if cut is not None:
            self.stopped = True
            return self._emit(cut, drop_rest=True)
        return self._emit(len(self._pending) - self._partial_stop_len())

    def flush(self) -> str:
        """End of generation: emit whatever is held back (no stop can complete now)."""
        if self.stopped:
            return ""
        self._pending += self._decoder.decode(b"", final=True)
        return self._emit(len(self._pending))

    def _find_stop(self) -> int | None:
        return min((i for s in self._stop if (i := self._pending.find(s)) >= 0), default=None)

    def _partial_stop_len(self) -> int:
        """Length of the longest suffix of pending text that starts some stop string."""
        tail = self._pending[-self._hold :]
        for n in range(min(len(tail), self._hold), 0, -1):
            suffix = tail[-n:]
            if any(s.startswith(suffix) for s in self._stop):
                return n
        return 0

    def _emit(self, n: int, drop_rest: bool = False) -> str:
        out, self._pending = self._pending[:n], ("" if drop_rest else self._pending[n:])
        if out:
            self._emitted.append(out)
        return out
