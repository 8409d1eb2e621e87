"""RedisBackend: the jobs interface for processes that are not workers (the
API, the CLI): records in Redis, work sent to the workers through Celery.

Bulk submission writes all records in one pipelined round trip and sends one
Celery message per chunk of jobs, sized so that every live worker for the model
gets several messages (a worker holds at most its pool width in messages)."""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import redis

from . import kinds
from .celery_app import make_app
from .errors import JobLost, JobNotFound, error_dict
from .reconcile import Reconciler
from .record import PRIORITIES, TERMINAL, JobRecord, Recent, new_job_id
from .settings import Settings, model_name_for
from .store import JobStore, NewJob
from .tasks import send_jobs

log = logging.getLogger("llamaq.remote")

MAX_JOBS_PER_MESSAGE = 64
WORKERS_CACHE_S = 1.0
WAIT_RECHECK_S = 1.0  # waits also re-read the record this often (a missed notification costs no more)


def normalise_model(name: str) -> str:
    name = name.rsplit("/", 1)[-1]
    return name[: -len(".gguf")] if name.endswith(".gguf") else name


class _DoneListener:
    """One pub/sub subscription per process: wakes the waiters of finished jobs."""

    def __init__(self, client: redis.Redis, channel: str):
        self._client, self._channel = client, channel
        self._waiters: dict[str, list[threading.Event]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def register(self, job_id: str) -> threading.Event:
        ev = threading.Event()
        with self._lock:
            self._waiters.setdefault(job_id, []).append(ev)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="llamaq-done", daemon=True)
                self._thread.start()
        return ev

    def unregister(self, job_id: str, ev: threading.Event) -> None:
        with self._lock:
            evs = self._waiters.get(job_id, [])
            if ev in evs:
                evs.remove(ev)
            if not evs:
                self._waiters.pop(job_id, None)

    def close(self) -> None:
        self._closed = True

    def _loop(self) -> None:
        while not self._closed:
            try:
                ps = self._client.pubsub(ignore_subscribe_messages=True)
                ps.subscribe(self._channel)
                while not self._closed:
                    msg = ps.get_message(timeout=1.0)
                    if msg is None:
                        continue
                    with self._lock:
                        evs = list(self._waiters.get(msg["data"], ()))
                    for ev in evs:
                        ev.set()
                ps.close()
            except (redis.RedisError, OSError, ValueError):
                # connection lost (waiters still re-read records every second): resubscribe
                time.sleep(1.0)


class RedisBackend:
    def __init__(self, redis_url: str | None = None, *, settings: Settings | None = None,
                 default_model: str | None = None):
        s = settings or Settings.from_env()
        if redis_url:
            s = replace(s, redis_url=redis_url)
        self.settings = s
        self.client = s.redis_client(decode_responses=True)
        self.store = JobStore(self.client, s)
        self.celery = make_app(s)
        self.default_model = normalise_model(default_model) if default_model else None
        self._done = _DoneListener(self.client, self.store.done_channel)
        self._workers: list[dict] = []
        self._workers_at = 0.0
        self._submitted = Recent()  # the jobs submitted here: one Redis lost is failed job_lost, not unknown
        self._reconciler = Reconciler(self.store, lambda ids, model, priority: send_jobs(self.celery, ids, model,
                                                                                        priority),
                                      f"api:{socket.gethostname()}:{os.getpid()}")
        self._alone_since: float | None = None  # since when no worker has been alive (reconcile)

    # ------------------------------------------------------------ workers and models
    def workers(self) -> list[dict]:
        now = time.monotonic()
        if now - self._workers_at > WORKERS_CACHE_S:
            self._workers, self._workers_at = self.store.live_workers(), now
        return self._workers

    def models(self) -> list[str]:
        """Models some live worker serves."""
        return sorted({m for w in self.workers() for m in w.get("models", [])})

    def _resolve_model(self, body: dict) -> str:
        if body.get("model"):
            return normalise_model(body["model"])
        if self.default_model:
            return self.default_model
        served = self.models()
        return served[0] if served else model_name_for(None)

    def _slots(self, model: str) -> int:
        return sum(int(w.get("parallel", 16)) for w in self.workers() if model in w.get("models", [])) or 16

    # ------------------------------------------------------------ submission
    def submit(self, kind: str, body: dict, *, priority: str = "interactive", stream: bool = False) -> JobRecord:
        """Validate and queue one job (raises JobValidationError)."""
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {PRIORITIES}")
        body = kinds.validate(kind, body)
        job = NewJob(new_job_id(), kind, self._resolve_model(body), body, priority, None, stream)
        now = time.time()
        self.store.create_many([job], now=now)
        rec = JobRecord(id=job.id, kind=kind, model=job.model, created_at=now, priority=priority)
        self._submitted.put(job.id, rec)
        send_jobs(self.celery, [job.id], job.model, priority)
        return replace(rec, detail=self._detail(job.model))

    def submit_many(self, items: list[tuple[str, dict]], *, priority: str = "batch",
                    batch_id: str | None = None, jobs_per_message: int | None = None,
                    ids: list[str] | None = None, custom_ids: list[str | None] | None = None,
                    errors: dict[int, dict] | None = None) -> list[str]:
        """Queue many jobs at once; returns their ids in order. A bad body becomes
        a job that failed at once (its error says why): every item gets an id.
        ids: given ids (a job that exists is left as it is, so a repeated call
        queues nothing twice); errors: item index -> error dict, failed at once.
        jobs_per_message: None sizes messages from the live workers' sequences."""
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {PRIORITIES}")
        errors = errors or {}
        jobs, failed = [], {}
        for i, (kind, body) in enumerate(items):
            jid = ids[i] if ids else new_job_id()
            cid = custom_ids[i] if custom_ids else None
            try:
                if i in errors:
                    failed[jid] = errors[i]
                else:
                    body = kinds.validate(kind, body)
                    model = self._resolve_model(body)
            except Exception as e:
                failed[jid] = error_dict(e)
            if jid in failed:
                jobs.append(NewJob(jid, kind if isinstance(kind, str) else "", "", {}, priority, batch_id,
                                   custom_id=cid))
                continue
            jobs.append(NewJob(jid, kind, model, body, priority, batch_id, custom_id=cid))
        to_send = set(self.store.create_many(jobs, failed))
        by_model: dict[str, list[str]] = {}
        for j in jobs:
            if j.id in to_send:
                by_model.setdefault(j.model, []).append(j.id)
        with self.celery.producer_or_acquire() as producer:
            for model, mids in by_model.items():
                size = jobs_per_message or max(
                    1, min(MAX_JOBS_PER_MESSAGE, math.ceil(len(mids) / (2 * self._slots(model)))))
                for i in range(0, len(mids), size):
                    send_jobs(self.celery, mids[i : i + size], model, priority, producer=producer)
        return [j.id for j in jobs]

    # ------------------------------------------------------------ reading
    def _detail(self, model: str | None) -> str | None:
        if model and model not in self.models():
            return f"no worker serves model '{model}': the job waits until one does"
        return None

    def _with_detail(self, rec: JobRecord | None) -> JobRecord | None:
        if rec is not None and rec.status == "queued":
            rec.detail = self._detail(rec.model)
        return rec

    def get(self, job_id: str) -> JobRecord | None:
        return self._with_detail(self.store.get(job_id) or self._lost(job_id))

    def _lost(self, job_id: str) -> JobRecord | None:
        """A job submitted here whose record Redis no longer has, though it would not
        have expired yet: Redis restarted without its data. Failed, saying so."""
        rec = self._submitted.get(job_id)
        if rec is None or time.time() > rec.created_at + self.settings.result_ttl:
            return None
        return replace(rec, status="failed", finished_at=time.time(), error=_lost_error(job_id).to_dict())

    def get_many(self, job_ids: list[str]) -> list[JobRecord | None]:
        return [self._with_detail(r) for r in self.store.get_many(job_ids)]

    def wait(self, job_id: str, timeout: float | None = None, *, existed: bool = False) -> JobRecord:
        """Until the job finishes; after timeout, the record as it is then.
        existed: the record was seen before (its loss is JobLost, not JobNotFound)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        ev = self._done.register(job_id)
        try:
            while True:
                rec = self.get(job_id)
                if rec is None:
                    if existed:
                        raise _lost_error(job_id)
                    raise JobNotFound(f"no job {job_id!r}", "job_id")
                existed = True
                left = None if deadline is None else deadline - time.monotonic()
                if rec.status in TERMINAL or (left is not None and left <= 0):
                    return rec
                ev.wait(WAIT_RECHECK_S if left is None else min(left, WAIT_RECHECK_S))
                ev.clear()
        finally:
            self._done.unregister(job_id, ev)

    def events(self, job_id: str) -> Iterator[dict]:
        """{"delta": text, "index": i} while a streaming job runs, then {"record": JobRecord}."""
        streamed = self.client.hget(self.store.job_key(job_id), "stream")
        if streamed == "1":
            last = "0-0"
            while True:
                entries = self.store.read_stream(job_id, last, block_ms=1000)
                if not entries:
                    rec = self.store.get(job_id)
                    if rec is None or (rec.status in TERMINAL and not self.client.exists(self.store.stream_key(job_id))):
                        break
                    continue
                end = False
                for entry_id, fields in entries:
                    last = entry_id
                    if "end" in fields:
                        end = True
                        break
                    yield {"delta": fields["d"], "index": int(fields.get("i", 0))}
                if end:
                    break
        yield {"record": self.wait(job_id, existed=streamed is not None)}

    # ------------------------------------------------------------ cancelling
    def cancel(self, job_id: str) -> bool:
        """True if the job was queued (it will never run) or running (its worker stops it)."""
        return self.store.cancel(job_id) in ("cancelled", "cancelling")

    def cancel_batch(self, batch_id: str) -> int:
        ids = self.store.batch_job_ids(batch_id)
        return sum(s in ("cancelled", "cancelling") for s in self.store.cancel_many(ids))

    def batch_counts(self, batch_id: str) -> dict[str, int]:
        return self.store.batch_counts(batch_id)

    def batch_job_ids(self, batch_id: str) -> list[str]:
        return self.store.batch_job_ids(batch_id)

    def reconcile(self) -> None:
        """A reconciler sweep (jobs/reconcile.py) from this process, once no worker
        has been alive for a heartbeat TTL: no worker sweeps then, and a dead
        worker's job would show running until one came. (While workers live their
        sweeps do it: their own heartbeats tell them a stalled Redis from a dead
        worker, and after a Redis freeze live workers beat again within the TTL.)"""
        try:
            alone = not self.workers()
        except redis.RedisError:
            alone = False
        now = time.monotonic()
        self._alone_since = (self._alone_since or now) if alone else None
        if self._alone_since is None or now - self._alone_since < self.settings.heartbeat_ttl:
            return
        try:
            self._reconciler.sweep()
        except redis.RedisError:
            self._reconciler.redis_stalled()

    # ------------------------------------------------------------ health
    def health(self) -> dict:
        try:
            self.client.ping()
        except redis.RedisError as e:
            return {"status": "unavailable", "backend": "redis", "redis": str(e), "models": [], "workers": 0}
        workers = self.workers()
        return {"status": "ok" if workers else "no_workers", "backend": "redis", "redis": "ok",
                "models": self.models(), "workers": len(workers)}

    def metrics(self) -> dict:
        models = sorted(set(self.store.known_models()) | set(self.models()))
        per_model = {m: self.store.model_counts(m) for m in models if m}
        workers = self.workers()
        return {"backend": "redis", "jobs": self.store.stats(), "models": per_model,
                "queue_depth": {m: c.get("queued", 0) for m, c in per_model.items()},
                "workers": [{k: v for k, v in w.items() if k != "engine"} for w in workers],
                "engines": [{"worker": w.get("name"), **w["engine"]} for w in workers if "engine" in w]}

    def close(self) -> None:
        self._done.close()
        self.client.close()


def _lost_error(job_id: str) -> JobLost:
    return JobLost(f"job {job_id} was lost: the queue's Redis no longer has it (restarted without its data); "
                   "submit it again")
