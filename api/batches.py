"""The Batch API's side of batches: the record a create starts from, what
callers see, and the periodic sweep that moves open batches on. The state
machine itself is jobs/batches.py; this process holds no thread per batch, and
any API process (or several) can run the sweep."""

from __future__ import annotations

import logging
import threading
import time

from jobs.batches import COMPLETION_WINDOWS, ENDPOINT_KINDS, BatchLimits, Batches  # noqa: F401  re-exported

from .ids import new_id
from .jobresult import job_error

log = logging.getLogger("llamaq.api.batches")


def public(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k not in ("owner", "final")}


def new_batch(owner: str, input_file_id: str, endpoint: str, window: str, metadata: dict | None) -> dict:
    now = int(time.time())
    return {
        "id": new_id("batch_"), "object": "batch", "endpoint": endpoint, "errors": None,
        "input_file_id": input_file_id, "completion_window": window, "status": "validating",
        "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
        "expires_at": now + COMPLETION_WINDOWS[window], "finalizing_at": None, "completed_at": None,
        "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
        "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": metadata, "model": None,
        "usage": None, "owner": owner,
    }


class BatchManager:
    """Creates, shows and cancels batches; one timer sweeps the open ones."""

    def __init__(self, backend, store, validate, limits: BatchLimits | None = None):
        self.store = store
        self.limits = limits or BatchLimits()
        self.machine = Batches(backend, store, validate, job_error, self.limits)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="batch-sweep", daemon=True)

    def start(self) -> None:
        self._sweeper.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._sweeper.is_alive():
            self._sweeper.join(timeout=5)

    def create(self, batch: dict) -> None:
        self.store.put_batch(batch)
        self._wake.set()

    def get(self, batch_id: str) -> dict | None:
        batch = self.store.get_batch(batch_id)
        return self.machine.view(batch) if batch else None

    def cancel(self, batch_id: str) -> dict:
        out = self.machine.cancel(batch_id)
        self._wake.set()
        return out

    def _sweep_loop(self) -> None:
        reconcile = getattr(self.machine.backend, "reconcile", None)  # jobs of dead workers (RedisBackend)
        while not self._stop.is_set():
            try:
                if reconcile is not None:
                    reconcile()
                self.machine.sweep(self._stop)
            except Exception as e:  # the store unreachable: try again next time
                log.warning("batch sweep: %s: %s", type(e).__name__, e)
            self._wake.wait(self.limits.poll_s)
            self._wake.clear()
