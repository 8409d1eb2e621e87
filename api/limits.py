"""Per-key limits: the jobs one API key has queued or running through this API
process (interactive requests and /v1/jobs), and the batches it has open.
Past a limit the request is answered 429 with Retry-After and nothing is queued,
so one key cannot fill the queue for everyone."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Callable

from jobs.batches import FINAL_BATCH_STATES
from jobs.record import TERMINAL

from .errors import APIError


def rate_limited(message: str, retry_after: int, code: str) -> APIError:
    return APIError(429, message, type="rate_limit_error", code=code, headers={"Retry-After": str(retry_after)})


class KeyLimits:
    def __init__(self, max_jobs: int, max_batches: int, retry_after_s: int):
        self.max_jobs = max_jobs  # 0: no limit
        self.max_batches = max_batches
        self.retry_after_s = retry_after_s
        self._held: Counter[str] = Counter()  # requests between admission and their job's end or id
        self._queued: defaultdict[str, set[str]] = defaultdict(set)  # /v1/jobs ids not yet seen finished
        self._batch_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def _count(self, owner: str) -> int:
        return self._held[owner] + len(self._queued.get(owner, ()))

    async def admit_job(self, owner: str, bridge, backend) -> Callable[[], None]:
        """Hold a job slot for owner (429 if none is free); returns its release."""
        if self.max_jobs and self._count(owner) >= self.max_jobs and self._queued.get(owner):
            await self._prune(owner, bridge, backend)
        if self.max_jobs and self._count(owner) >= self.max_jobs:  # no await between this check and the hold
            raise rate_limited(f"this API key has {self._count(owner)} jobs queued or running; the limit is "
                               f"{self.max_jobs}", self.retry_after_s, "too_many_jobs")
        self._held[owner] += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._held[owner] -= 1
                if not self._held[owner]:
                    del self._held[owner]

        return release

    def track(self, owner: str, job_id: str) -> None:
        """A /v1/jobs job: it counts until it is seen finished."""
        if self.max_jobs:
            self._queued[owner].add(job_id)

    async def _prune(self, owner: str, bridge, backend) -> None:
        ids = list(self._queued[owner])
        get_many = getattr(backend, "get_many", None)
        recs = await bridge.call(get_many, ids) if get_many else await bridge.call(lambda: [backend.get(i) for i in ids])
        done = {i for i, rec in zip(ids, recs) if rec is None or rec.status in TERMINAL}
        self._queued[owner] -= done
        if not self._queued[owner]:
            del self._queued[owner]

    def batch_slot(self, owner: str) -> asyncio.Lock:
        """Held around counting and creating a key's batch, so two creates cannot both pass."""
        return self._batch_locks[owner]

    async def check_batches(self, owner: str, bridge, store) -> None:
        if not self.max_batches:
            return
        batches = await bridge.call(store.list_batches, owner)
        n = sum(1 for b in batches if b.get("status") not in FINAL_BATCH_STATES)
        if n >= self.max_batches:
            raise rate_limited(f"this API key has {n} open batches; the limit is {self.max_batches}",
                               self.retry_after_s * 10, "too_many_batches")
