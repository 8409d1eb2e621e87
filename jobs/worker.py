"""The worker side: one engine per worker process, shared by all pool threads.

Celery's threads pool runs each message (a list of job ids) in a thread; the
thread claims each job in its record, submits it to the in-process engine and
hands it to a thread of its own that records the result, so every job the
worker holds decodes in one batch and the pool thread is free for the next
message. Batch jobs go to the engine with priority 1, interactive ones with 0:
the engine admits waiting requests in (priority, arrival) order, and an
interactive message never waits for a pool thread behind batch messages.

Three background threads: a heartbeat (the worker's models and the jobs it
holds, in Redis with a TTL), a cancel watcher (polls the cancel set for the
jobs running here and cancels their engine handles) and the reconciler's sweep
(jobs/reconcile.py). The Celery wiring is in jobs/celery_app.py.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass

import redis

from . import kinds
from .errors import error_dict, is_client_error
from .reconcile import Reconciler
from .settings import Settings
from .store import Claim, JobStore

log = logging.getLogger("llamaq.worker")

CANCEL_POLL_S = 0.05
SPARE_THREADS = 2  # pool threads a batch message never waits in: interactive messages get one at once
HAND_BACK_S = 0.2  # a batch message that finds no room and no spare thread goes back after this


@dataclass
class _Run:
    job_id: str
    claim: Claim
    pending: kinds.Pending | None = None


def _retry_redis(fn, *args, window_s: float = 60.0, **kwargs):
    """Redis calls whose loss would cost a rerun: retry through a restart. Past
    window_s the error propagates; the reconciler then sends the job again."""
    deadline = time.monotonic() + window_s
    while True:
        try:
            return fn(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            if time.monotonic() >= deadline:
                raise
            time.sleep(min(1.0, max(0.05, window_s / 20)))


class WorkerRuntime:
    def __init__(self, engine, store: JobStore, settings: Settings, model_name: str, publish=None,
                 name: str | None = None, reserved=None):
        self.engine = engine
        # reserved() -> job ids in the messages this worker took and has not finished with
        # (reported in the heartbeat: the reconciler re-sends those of a dead worker)
        self.reserved = reserved
        self.store = store
        self.settings = settings
        self.model_name = model_name
        self.publish = publish  # publish(job_ids, model, priority): re-send retried jobs
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(2).hex()}"
        self.started_at = time.time()
        self._local: dict[str, _Run] = {}
        self._claiming: set[str] = set()  # being claimed: counted as held (see _beat)
        self._admitted = 0  # jobs of batch messages past the capacity wait, not all claimed yet
        self._waiting = 0  # pool threads whose batch message waits for capacity
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # notified when a job here is settled
        self._stop = threading.Event()
        self._leaving = threading.Event()  # warm shutdown: batch messages go back, none is started
        self.reconciler = Reconciler(store, publish, self.name) if publish is not None else None
        loops = [self._heartbeat_loop, self._cancel_loop] + ([self._sweep_loop] if self.reconciler else [])
        self._threads = [threading.Thread(target=f, name=f"llamaq{f.__name__[:-5]}", daemon=True) for f in loops]

    def start(self) -> None:
        self._beat()
        for t in self._threads:
            t.start()
        log.info("worker %s serves %s", self.name, self.model_name)

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=5)
        try:
            self.store.unregister(self.name)
        except redis.RedisError:
            pass

    def _retry(self, fn, *args, **kwargs):
        return _retry_redis(fn, *args, window_s=self.settings.redis_retry_s, **kwargs)

    # ------------------------------------------------------------ one message
    @property
    def capacity(self) -> int:
        """Batch jobs held at most before a batch message waits: the engine's
        sequences and a few waiting, the rest stays in Redis for other workers."""
        return self.settings.pool_threads

    def run_message(self, job_ids: list[str], priority: str = "batch") -> None:
        """Claim and start the jobs of one message that nobody else runs; a
        thread per job records its result. Returns once they are started, so
        the message is acknowledged and its pool thread takes the next one: an
        interactive message never waits behind batch messages for a thread.
        Progress no longer rests on the message: the records say who runs
        what, and the reconciler re-sends a job whose run is lost. A batch
        message first waits until this worker holds fewer than `capacity` jobs,
        takes what fits and sends the rest back to its queue."""
        take = len(job_ids)
        if priority != "interactive":
            with self._room:
                full = len(self._local) + self._admitted >= self.capacity
                if full and self.publish is not None and self._waiting >= self.settings.pool_threads - SPARE_THREADS:
                    # keep pool threads free for interactive messages: this one goes back
                    self._room.wait(HAND_BACK_S)
                    take = 0
                else:
                    self._waiting += 1
                    # admitted jobs count at once: several messages cannot pass together
                    while (len(self._local) + self._admitted >= self.capacity and not self._stop.is_set()
                           and not self._leaving.is_set()):
                        self._room.wait(0.5)
                    self._waiting -= 1
                    if self.publish is not None and self._leaving.is_set():
                        take = 0  # for another worker: this one would run it after SIGTERM
                    elif self.publish is not None:
                        take = min(take, max(1, self.capacity - len(self._local) - self._admitted))
                    self._admitted += take
            if take == 0:
                self.publish(job_ids, self.model_name, priority)
                return
            if take < len(job_ids):
                # the rest goes back to the queue (sent before this message is acknowledged):
                # a waiting pool thread is freed soon, so an interactive message finds one
                self.publish(job_ids[take:], self.model_name, priority)
        try:
            for jid in job_ids[:take]:
                run = self._claim(jid)
                if run is not None:
                    threading.Thread(target=self._wait, args=(run,), name=f"llamaq-job-{jid[-6:]}",
                                     daemon=True).start()
        finally:
            if priority != "interactive":
                with self._room:
                    self._admitted -= take

    def leave(self) -> None:
        """Warm shutdown began: the batch messages still waiting for room go back
        to their queue. (Called from a signal handler: takes no lock.)"""
        self._leaving.set()

    def drain(self, timeout: float) -> bool:
        """Wait until every job started here is settled (warm shutdown)."""
        deadline = time.monotonic() + timeout
        with self._room:
            while self._local and time.monotonic() < deadline:
                self._room.wait(min(0.5, max(0.01, deadline - time.monotonic())))
            return not self._local

    def _claim(self, jid: str) -> _Run | None:
        with self._lock:
            if jid in self._local:  # a redelivery of a job running here
                return None
            self._claiming.add(jid)
        try:
            claim = self._retry(self.store.claim, jid, self.name)
            if claim.state == "mine":  # the record says here, but no run here has it: run it again
                claim = self._retry(self.store.claim, jid, self.name, takeover=True)
            return self._start(jid, claim) if claim.state == "claimed" else None
        finally:
            with self._lock:
                self._claiming.discard(jid)

    def _start(self, jid: str, claim: Claim) -> _Run | None:
        run = _Run(jid, claim)
        on_delta = self._stream_to(jid) if claim.stream else None
        with self._lock:
            self._local[jid] = run
        try:
            run.pending = kinds.start(self.engine, claim.kind, claim.body, on_delta,
                                      priority=0 if claim.priority == "interactive"
                                      else self.settings.batch_engine_priority)
        except Exception as e:
            self._settle_error(run, e)
            return None
        return run

    def _wait(self, run: _Run) -> None:
        """Record the outcome; never raises: a result that cannot be recorded
        (Redis gone past the retry window) is dropped and the job run again."""
        try:
            try:
                body = run.pending.result()
            except Exception as e:
                self._settle_error(run, e)
                return
            status = "cancelled" if run.pending.cancelled else "succeeded"
            progress = {"completion_tokens": body.get("usage", {}).get("completion_tokens", 0)}
            self._finish(run, status, result=body, progress=progress)
        except redis.RedisError as e:
            log.error("job %s: its outcome could not be recorded (%s); the reconciler runs it again", run.job_id, e)
        finally:
            self._forget(run)

    def _settle_error(self, run: _Run, exc: BaseException) -> None:
        from engine.errors import EngineDead

        err = error_dict(exc)
        # every retry counts as an attempt (QueueFull included): a job cannot bounce forever
        retry = not is_client_error(exc) and run.claim.attempts < self.settings.max_attempts
        if retry and self.publish is not None:
            log.warning("job %s failed (attempt %d), queued again: %s", run.job_id, run.claim.attempts, exc)
            try:
                if self._retry(self.store.requeue, run.job_id, self.name, err):
                    self.publish([run.job_id], run.claim.model, run.claim.priority)
            except Exception as e:  # the reconciler re-sends it
                log.error("job %s: could not re-send it now (%s)", run.job_id, e)
            self._forget(run)
        else:
            if not is_client_error(exc):
                log.error("job %s failed: %s", run.job_id, exc)
            self._finish(run, "failed", error=err)
        if isinstance(exc, EngineDead):
            log.critical("the engine died; stopping this worker")
            os.kill(os.getpid(), signal.SIGTERM)

    def _finish(self, run: _Run, status: str, result=None, error=None, progress=None) -> None:
        try:
            if not self._retry(self.store.finish, run.job_id, self.name, status, result, error, progress):
                log.info("job %s: result not recorded (finished or taken over elsewhere)", run.job_id)
        finally:
            self._forget(run)

    def _forget(self, run: _Run) -> None:
        with self._lock:
            if self._local.get(run.job_id) is run:
                del self._local[run.job_id]
                self._room.notify_all()

    def _stream_to(self, jid: str):
        def on_delta(text: str, index: int) -> None:
            try:
                self.store.add_delta(jid, text, index)
            except redis.RedisError:
                log.warning("job %s: a stream delta was lost (Redis unavailable)", jid)

        return on_delta

    # ------------------------------------------------------------ background
    def info(self) -> dict:
        stats = self.engine.stats()
        return {"name": self.name, "models": [self.model_name], "hostname": socket.gethostname(),
                "pid": os.getpid(), "parallel": self.settings.parallel, "threads": self.settings.pool_threads,
                "started_at": self.started_at, "running_jobs": len(self._local),
                "engine_alive": bool(getattr(self.engine, "alive", True)), "engine": vars(stats)}

    def _beat(self) -> None:
        held_at = time.time()
        reserved = list(self.reserved()) if self.reserved is not None else []
        with self._lock:
            held = list(self._local) + list(self._claiming) + reserved
        self.store.heartbeat(self.name, self.info(), held, held_at)

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.settings.sweep_interval):
            try:
                self.reconciler.sweep()
            except redis.RedisError as e:
                log.warning("reconciler sweep: %s", e)
                self.reconciler.redis_stalled()
            except Exception:
                log.exception("reconciler sweep")

    def _heartbeat_loop(self) -> None:
        period = max(0.2, self.settings.heartbeat_ttl / 3)
        while not self._stop.wait(period):
            if not getattr(self.engine, "alive", True):
                log.critical("the engine is dead; stopping this worker")
                os.kill(os.getpid(), signal.SIGTERM)
                return
            try:
                self._beat()
            except redis.RedisError as e:
                log.warning("heartbeat failed: %s", e)
                if self.reconciler is not None:  # the other workers' beats failed too
                    self.reconciler.redis_stalled()

    def _cancel_loop(self) -> None:
        while not self._stop.wait(CANCEL_POLL_S):
            with self._lock:
                runs = [r for r in self._local.values() if r.pending is not None and not r.pending.cancel_requested]
            if not runs:
                continue
            try:
                flags = self.store.cancel_requested([r.job_id for r in runs])
            except redis.RedisError:
                continue
            for run, flag in zip(runs, flags):
                if flag:
                    log.info("job %s: cancelled", run.job_id)
                    run.pending.cancel()


# ---------------------------------------------------------------- the process's runtime

_runtime: WorkerRuntime | None = None


def runtime() -> WorkerRuntime:
    if _runtime is None:
        raise RuntimeError("the llamaq worker runtime is not started (not running inside `llamaq worker`?)")
    return _runtime


def install(rt: WorkerRuntime | None) -> None:
    global _runtime
    _runtime = rt
