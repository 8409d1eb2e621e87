"""The caller's side of a submitted request: a stream of text deltas and a result."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

from .errors import EngineError, RequestFailed
from .types import Request, Result

_END = object()


class Handle:
    """Thread-safe. The engine thread pushes deltas and the result; any thread
    reads them. Iterating yields text deltas until the request finishes."""

    def __init__(self, request: Request, on_cancel: Callable[[], None] | None = None):
        self.request = request
        self._on_cancel = on_cancel
        self._deltas: queue.SimpleQueue = queue.SimpleQueue()
        self._done = threading.Event()
        self._result: Result | None = None
        self._error: BaseException | None = None
        self.cancel_requested = False

    # -- engine side --
    def _push(self, delta: str) -> None:
        if delta:
            self._deltas.put(delta)

    def _finish(self, result: Result | None, error: BaseException | None = None) -> None:
        if self._done.is_set():
            return
        self._result, self._error = result, error
        self._done.set()
        self._deltas.put(_END)

    # -- caller side --
    def cancel(self) -> None:
        """Ask the engine to stop this request; its sequence is freed at the next step."""
        if not self.cancel_requested and not self.done:
            self.cancel_requested = True
            if self._on_cancel:
                self._on_cancel()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def __iter__(self) -> Iterator[str]:
        while True:
            item = self._deltas.get()
            if item is _END:
                self._deltas.put(_END)  # let other iterators end too
                return
            yield item

    def result(self, timeout: float | None = None) -> Result:
        """Wait for the request to finish. Raises the request's error, if any,
        or TimeoutError."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"request {self.request.id} not finished after {timeout}s")
        if self._error is not None:
            if isinstance(self._error, EngineError):
                raise self._error
            raise RequestFailed(f"{type(self._error).__name__}: {self._error}") from self._error
        assert self._result is not None
        return self._result
