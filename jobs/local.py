"""LocalBackend: the jobs interface on an in-process engine. No Redis, no
Celery: records live in memory, a pool of threads about as wide as the
engine's parallel sequences feeds it (interactive jobs first)."""

from __future__ import annotations

import copy
import itertools
import queue
import threading
import time
from collections.abc import Iterator

from . import kinds
from .errors import JobNotFound, ModelNotFound, error_dict, is_client_error
from .record import PRIORITIES, TERMINAL, JobRecord, new_job_id


class _Failed(Exception):
    """A job failed at submission with a given error (a bad batch line)."""

    def __init__(self, error: dict):
        self.error = error


class _Stream:
    """Deltas of one streaming job, kept until the record expires."""

    def __init__(self):
        self.events: list[dict] = []
        self.cond = threading.Condition()

    def push(self, event: dict) -> None:
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()


def resolve_local_model(requested: str | None, served: str) -> str:
    if not requested:
        return served
    name = requested.rsplit("/", 1)[-1]
    name = name[: -len(".gguf")] if name.endswith(".gguf") else name
    if name != served:
        raise ModelNotFound(f"model '{requested}' not found; this server serves '{served}'", "model")
    return served


class LocalBackend:
    def __init__(self, engine, *, threads: int | None = None, result_ttl: float = 24 * 3600):
        self.engine = engine
        self.result_ttl = result_ttl
        n_par = getattr(getattr(engine, "config", None), "n_parallel", 16)
        self._records: dict[str, JobRecord] = {}
        self._bodies: dict[str, dict] = {}
        self._streams: dict[str, _Stream] = {}
        self._running: dict[str, kinds.Pending] = {}
        self._cancel: set[str] = set()
        self._batches: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._queue: queue.PriorityQueue = queue.PriorityQueue()
        self._seq = itertools.count()
        self._closed = False
        self._threads = [threading.Thread(target=self._loop, name=f"llamaq-job-{i}", daemon=True)
                         for i in range(threads or n_par + max(2, n_par // 4))]
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------ interface
    def models(self) -> list[str]:
        return [self.engine.model_name]

    def submit(self, kind: str, body: dict, *, priority: str = "interactive", stream: bool = False) -> JobRecord:
        """Validate and queue one job (raises JobValidationError / ModelNotFound)."""
        body = kinds.validate(kind, body)
        model = resolve_local_model(body.get("model"), self.engine.model_name)
        rec = self._add(kind, model, body, priority, None, stream)
        return copy.copy(rec)

    def submit_many(self, items: list[tuple[str, dict]], *, priority: str = "batch",
                    batch_id: str | None = None, ids: list[str] | None = None,
                    custom_ids: list[str | None] | None = None, errors: dict[int, dict] | None = None) -> list[str]:
        """Queue many jobs; a bad item becomes a failed job (its error says why),
        so every item gets an id in order. ids: given ids (one that exists is left
        as it is); errors: item index -> error dict, failed at once."""
        out = []
        for i, (kind, body) in enumerate(items):
            jid, cid = ids[i] if ids else new_job_id(), custom_ids[i] if custom_ids else None
            with self._lock:
                exists = jid in self._records
            if exists:
                out.append(jid)
                continue
            try:
                if errors and i in errors:
                    raise _Failed(errors[i])
                body = kinds.validate(kind, body)
                model = resolve_local_model(body.get("model"), self.engine.model_name)
                out.append(self._add(kind, model, body, priority, batch_id, False, jid, cid).id)
            except Exception as e:
                out.append(self._add_failed(kind, priority, batch_id, e, jid, cid).id)
        return out

    def get_many(self, job_ids: list[str]) -> list[JobRecord | None]:
        return [self.get(j) for j in job_ids]

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            rec = self._records.get(job_id)
            return copy.copy(rec) if rec else None

    def wait(self, job_id: str, timeout: float | None = None) -> JobRecord:
        """Until the job finishes; after timeout, the record as it is then."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while True:
                rec = self._records.get(job_id)
                if rec is None:
                    raise JobNotFound(f"no job {job_id!r}", "job_id")
                if rec.status in TERMINAL:
                    return copy.copy(rec)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return copy.copy(rec)
                self._changed.wait(left)

    def events(self, job_id: str) -> Iterator[dict]:
        """{"delta": text, "index": i} while a streaming job runs, then {"record": JobRecord}."""
        stream = self._streams.get(job_id)
        if stream is not None:
            i = 0
            while True:
                with stream.cond:
                    while i >= len(stream.events):
                        stream.cond.wait()
                    ev = stream.events[i]
                i += 1
                if ev.get("end"):
                    break
                yield ev
        yield {"record": self.wait(job_id)}

    def cancel(self, job_id: str) -> bool:
        with self._changed:
            rec = self._records.get(job_id)
            if rec is None or rec.status in TERMINAL:
                return False
            if rec.status == "queued":
                self._finish_locked(rec, "cancelled")
                return True
            self._cancel.add(job_id)
            pending = self._running.get(job_id)
        if pending is not None:
            pending.cancel()
        return True

    def cancel_batch(self, batch_id: str) -> int:
        return sum(self.cancel(j) for j in list(self._batches.get(batch_id, [])))

    def batch_counts(self, batch_id: str) -> dict[str, int]:
        counts = dict.fromkeys(("total", "queued", "running", "succeeded", "failed", "cancelled"), 0)
        with self._lock:
            for j in self._batches.get(batch_id, []):
                rec = self._records.get(j)
                if rec:
                    counts["total"] += 1
                    counts[rec.status] += 1
        return counts

    def batch_job_ids(self, batch_id: str) -> list[str]:
        return list(self._batches.get(batch_id, []))

    def health(self) -> dict:
        alive = getattr(self.engine, "alive", True)
        return {"status": "ok" if alive else "unavailable", "backend": "local", "models": self.models(),
                "workers": 1 if alive else 0}

    def metrics(self) -> dict:
        with self._lock:
            by_status = dict.fromkeys(("queued", "running", "succeeded", "failed", "cancelled"), 0)
            for r in self._records.values():
                by_status[r.status] += 1
        return {"backend": "local", "jobs": by_status,
                "queue_depth": {self.engine.model_name: by_status["queued"]},
                "engines": [vars(self.engine.stats())]}

    def close(self) -> None:
        self._closed = True
        for _ in self._threads:
            self._queue.put((99, 0, None))

    # ------------------------------------------------------------ internals
    def _add(self, kind, model, body, priority, batch_id, stream, jid=None, custom_id=None) -> JobRecord:
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {PRIORITIES}")
        rec = JobRecord(id=jid or new_job_id(), kind=kind, model=model, created_at=time.time(),
                        priority=priority, batch_id=batch_id, custom_id=custom_id)
        with self._lock:
            self._prune_locked()
            self._records[rec.id] = rec
            self._bodies[rec.id] = body
            if stream:
                self._streams[rec.id] = _Stream()
            if batch_id:
                self._batches.setdefault(batch_id, []).append(rec.id)
        self._queue.put((PRIORITIES.index(priority), next(self._seq), rec.id))
        return rec

    def _add_failed(self, kind, priority, batch_id, exc, jid=None, custom_id=None) -> JobRecord:
        rec = JobRecord(id=jid or new_job_id(), kind=kind, model=None, created_at=time.time(),
                        priority=priority, batch_id=batch_id, custom_id=custom_id)
        with self._changed:
            self._records[rec.id] = rec
            if batch_id:
                self._batches.setdefault(batch_id, []).append(rec.id)
            self._finish_locked(rec, "failed", error=exc.error if isinstance(exc, _Failed) else error_dict(exc))
        return rec

    def _prune_locked(self) -> None:
        if len(self._records) % 1024:
            return
        cutoff = time.time() - self.result_ttl
        for jid in [j for j, r in self._records.items() if r.finished_at and r.finished_at < cutoff]:
            del self._records[jid]
            self._streams.pop(jid, None)
        for bid in [b for b, ids in self._batches.items() if not any(j in self._records for j in ids)]:
            del self._batches[bid]

    def _finish_locked(self, rec: JobRecord, status: str, result=None, error=None) -> None:
        rec.status, rec.result, rec.error, rec.finished_at = status, result, error, time.time()
        if result and isinstance(result.get("usage"), dict):
            rec.progress = {"completion_tokens": result["usage"].get("completion_tokens", 0)}
        self._bodies.pop(rec.id, None)
        self._cancel.discard(rec.id)
        stream = self._streams.get(rec.id)
        if stream is not None:
            stream.push({"end": True})
        self._changed.notify_all()

    def _loop(self) -> None:
        while True:
            _, _, job_id = self._queue.get()
            if job_id is None:
                return
            self._run_one(job_id)

    def _run_one(self, job_id: str) -> None:
        with self._lock:
            rec = self._records.get(job_id)
            if rec is None or rec.status != "queued":
                return  # cancelled while queued
            rec.status, rec.started_at, rec.attempts, rec.worker = "running", time.time(), rec.attempts + 1, "local"
            body = self._bodies[job_id]
            stream = self._streams.get(job_id)
        on_delta = (lambda d, i: stream.push({"delta": d, "index": i})) if stream else None
        status, result, error = "succeeded", None, None
        try:
            pending = kinds.start(self.engine, rec.kind, body, on_delta,
                                  priority=PRIORITIES.index(rec.priority))
            with self._lock:
                self._running[job_id] = pending
                cancel_now = job_id in self._cancel
            if cancel_now:
                pending.cancel()
            result = pending.result()
            if pending.cancelled:
                status = "cancelled"
        except Exception as e:
            status, error = "failed", error_dict(e)
            if not is_client_error(e):
                import logging

                logging.getLogger("llamaq.jobs").exception("job %s failed", job_id)
        with self._changed:
            self._running.pop(job_id, None)
            self._finish_locked(rec, status, result, error)
