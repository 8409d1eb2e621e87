"""The worker side: one engine per worker process, shared by all pool threads.

Celery's threads pool runs each message (a list of job ids) in a thread; the
thread claims each job in its record, submits it to the in-process engine and
waits on the handles, so every job the worker holds decodes in one batch.

worker_process_init is not sent for the threads pool, so the engine is loaded
on worker_init (main process, before consuming); the worker registers once its
consumer is ready (worker_ready). Two background threads: a
heartbeat (the worker's models, in Redis with a TTL; a job owned by a worker
whose heartbeat lapsed is run again elsewhere) and a cancel watcher (polls the
cancel set for the jobs running here and cancels their engine handles).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field

import redis
from celery import signals

from . import kinds
from .errors import error_dict, is_client_error
from .settings import Settings, model_name_for, queue_name
from .store import Claim, JobStore

log = logging.getLogger("llamaq.worker")

CANCEL_POLL_S = 0.05
BUSY_POLL_S = 0.5


@dataclass
class _Run:
    job_id: str
    claim: Claim
    pending: kinds.Pending | None = None
    done: threading.Event = field(default_factory=threading.Event)


def _retry_redis(fn, *args, tries: int = 60, **kwargs):
    """Redis calls whose loss would lose a result: retry through a restart (~1 min)."""
    for i in range(tries):
        try:
            return fn(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            if i == tries - 1:
                raise
            time.sleep(1.0)


class WorkerRuntime:
    def __init__(self, engine, store: JobStore, settings: Settings, model_name: str, publish=None,
                 name: str | None = None):
        self.engine = engine
        self.store = store
        self.settings = settings
        self.model_name = model_name
        self.publish = publish  # publish(job_ids, model, priority): re-send retried jobs
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(2).hex()}"
        self.started_at = time.time()
        self._local: dict[str, _Run] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._heartbeat_loop, name="llamaq-heartbeat", daemon=True),
                         threading.Thread(target=self._cancel_loop, name="llamaq-cancel", daemon=True)]

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

    # ------------------------------------------------------------ one message
    def run_message(self, job_ids: list[str]) -> None:
        """Run every job in one message. Returns when each is finished (here or,
        for a job another live worker holds, there)."""
        runs, waits, busy = [], [], []
        for jid in job_ids:
            claim = _retry_redis(self.store.claim, jid, self.name)
            if claim.state == "mine":
                with self._lock:
                    existing = self._local.get(jid)
                if existing is not None:  # a redelivery of a job running here: wait for that run
                    waits.append(existing)
                    continue
                claim = _retry_redis(self.store.claim, jid, self.name, takeover=True)
            if claim.state == "busy":
                busy.append(jid)
            elif claim.state == "claimed":
                run = self._start(jid, claim)
                if run is not None:
                    runs.append(run)
        for run in runs:
            self._wait(run)
        for run in waits:
            run.done.wait()
        for jid in busy:
            self._wait_busy(jid)

    def _start(self, jid: str, claim: Claim) -> _Run | None:
        run = _Run(jid, claim)
        on_delta = self._stream_to(jid) if claim.stream else None
        with self._lock:
            self._local[jid] = run
        try:
            run.pending = kinds.start(self.engine, claim.kind, claim.body, on_delta)
        except Exception as e:
            self._settle_error(run, e)
            return None
        return run

    def _wait(self, run: _Run) -> None:
        try:
            body = run.pending.result()
        except Exception as e:
            self._settle_error(run, e)
            return
        status = "cancelled" if run.pending.cancelled else "succeeded"
        progress = {"completion_tokens": body.get("usage", {}).get("completion_tokens", 0)}
        self._finish(run, status, result=body, progress=progress)

    def _wait_busy(self, jid: str) -> None:
        """A redelivered job that a live worker is running: wait until it ends or
        that worker dies (then run it here). Acknowledging it earlier could lose it."""
        while not self._stop.is_set():
            claim = _retry_redis(self.store.claim, jid, self.name)
            if claim.state == "claimed":
                run = self._start(jid, claim)
                if run is not None:
                    self._wait(run)
                return
            if claim.state != "busy":
                return
            time.sleep(BUSY_POLL_S)

    def _settle_error(self, run: _Run, exc: BaseException) -> None:
        from engine.errors import EngineDead, QueueFull

        err = error_dict(exc)
        retry = not is_client_error(exc) and (
            isinstance(exc, (QueueFull, EngineDead)) or run.claim.attempts < self.settings.max_attempts)
        if retry and self.publish is not None:
            log.warning("job %s failed (attempt %d), queued again: %s", run.job_id, run.claim.attempts, exc)
            if _retry_redis(self.store.requeue, run.job_id, self.name, err):
                self.publish([run.job_id], run.claim.model, run.claim.priority)
            self._forget(run)
        else:
            if not is_client_error(exc):
                log.error("job %s failed: %s", run.job_id, exc)
            self._finish(run, "failed", error=err)
        if isinstance(exc, EngineDead):
            log.critical("the engine died; stopping this worker")
            os.kill(os.getpid(), signal.SIGTERM)

    def _finish(self, run: _Run, status: str, result=None, error=None, progress=None) -> None:
        if not _retry_redis(self.store.finish, run.job_id, self.name, status, result, error, progress):
            log.info("job %s: result not recorded (finished or taken over elsewhere)", run.job_id)
        self._forget(run)

    def _forget(self, run: _Run) -> None:
        with self._lock:
            if self._local.get(run.job_id) is run:
                del self._local[run.job_id]
        run.done.set()

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
        self.store.heartbeat(self.name, self.info())

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


# ---------------------------------------------------------------- Celery wiring

_runtime: WorkerRuntime | None = None


def runtime() -> WorkerRuntime:
    if _runtime is None:
        raise RuntimeError("the llamaq worker runtime is not started (not running inside `llamaq worker`?)")
    return _runtime


def _settings_of(app) -> Settings:
    from . import celery_app

    return celery_app.settings


@signals.celeryd_after_setup.connect
def _select_queues(sender, instance, conf, **kwargs) -> None:
    """Consume this model's queues, interactive first (listed first = polled first)."""
    s = _settings_of(instance.app)
    model = s.model_name or model_name_for(s.model)
    queues = instance.app.amqp.queues
    names = [queue_name(model, "interactive"), queue_name(model, "batch")]
    explicit = queues._consume_from is not None  # -Q given: keep those too
    for n in names:
        queues.select_add(n) if explicit else queues.add(n)
    if not explicit:
        queues.select(names)


@signals.worker_init.connect
def _load_engine(sender, **kwargs) -> None:
    global _runtime
    from engine import Engine, EngineConfig

    from .tasks import send_jobs

    app = sender.app
    if "thread" not in str(sender.pool_cls).lower():
        raise RuntimeError(f"llamaq workers need the threads pool (--pool threads), not {sender.pool_cls!r}: "
                           "one engine per process is shared by all the jobs it holds")
    s = _settings_of(app)
    cfg = EngineConfig(model_path=s.model, n_parallel=s.parallel, n_gpu_layers=s.n_gpu_layers)
    if s.n_ctx:
        cfg.n_ctx = s.n_ctx
    log.info("loading %s (parallel %d, %d pool threads)", cfg.resolved_model_path(), s.parallel, s.pool_threads)
    engine = Engine(cfg)
    model = s.model_name or engine.model_name
    store = JobStore.from_url(s.redis_url, s)
    _runtime = WorkerRuntime(engine, store, s, model,
                             publish=lambda ids, m, p: send_jobs(app, ids, m, p))


@signals.worker_ready.connect
def _register(sender, **kwargs) -> None:
    """Heartbeat from when the consumer takes messages: a registered worker is one
    that serves (the API's health and a job's "no worker serves" detail rely on it)."""
    if _runtime is not None:
        _runtime.start()


@signals.worker_shutdown.connect
def _shutdown(sender, **kwargs) -> None:
    global _runtime
    if _runtime is not None:
        _runtime.close()
        _runtime.engine.close()
        _runtime = None
