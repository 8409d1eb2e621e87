"""The async side of the synchronous jobs Backend: calls run on a thread pool;
a waiting request cancels its job when the client goes away; a job's events
are pumped from a thread into the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from starlette.requests import Request

_END = object()


class ClientGone(Exception):
    """The HTTP client disconnected while its job was running."""


class Bridge:
    def __init__(self, backend, max_threads: int = 512, models_ttl_s: float = 1.0):
        self.backend = backend
        self.pool = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="api-backend")
        self._models: tuple[float, list[str]] = (0.0, [])
        self._models_ttl = models_ttl_s

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def call(self, fn, *args, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, lambda: fn(*args, **kwargs))

    async def models(self) -> list[str]:
        at, models = self._models
        if time.monotonic() - at > self._models_ttl:
            models = list(await self.call(self.backend.models))
            self._models = (time.monotonic(), models)
        return models

    async def wait(self, job_id: str, request: Request | None):
        """The finished JobRecord; cancels the job and raises ClientGone if the
        client disconnects first."""
        try:
            return await self.until_disconnect(self.call(self.backend.wait, job_id), request)
        except ClientGone:
            self.pool.submit(self.backend.cancel, job_id)
            raise

    async def until_disconnect(self, awaitable, request: Request | None):
        """awaitable's result, or ClientGone if the client disconnects first."""
        waiting = asyncio.ensure_future(awaitable)
        if request is None:
            return await waiting
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            done, _ = await asyncio.wait({waiting, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if waiting in done:
            return waiting.result()
        waiting.cancel()
        raise ClientGone()

    async def events(self, job_id: str) -> AsyncIterator[list[dict]]:
        """The job's events in lists: all that arrived since the last yield, so a
        slow reader gets fewer, larger pieces instead of falling behind."""
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def pump() -> None:
            try:
                for ev in self.backend.events(job_id):
                    loop.call_soon_threadsafe(q.put_nowait, ev)
                    if stop.is_set():
                        break
            except BaseException as e:  # handed to the reader, which answers it
                loop.call_soon_threadsafe(q.put_nowait, e)
            finally:
                loop.call_soon_threadsafe(q.put_nowait, _END)

        loop.run_in_executor(self.pool, pump)
        try:
            while True:
                items = [await q.get()]
                while not q.empty():
                    items.append(q.get_nowait())
                end = _END in items
                evs = [i for i in items if i is not _END]
                for e in evs:
                    if isinstance(e, BaseException):
                        raise e
                if evs:
                    yield evs
                if end:
                    return
        finally:
            stop.set()


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
