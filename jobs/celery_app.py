"""The Celery app: Redis broker, one task type (llamaq.run_jobs), queues per
model and priority (llamaq.<model>.interactive / llamaq.<model>.batch).

Start a worker either way:
    llamaq worker --model PATH [--parallel N] [--redis URL]
    LLAMAQ_MODEL=PATH LLAMAQ_REDIS_URL=URL celery -A jobs.celery_app worker
(the second gets the threads pool, its width and its queues from the
signal handlers and the config below).
"""

from __future__ import annotations

import logging

from celery import Celery, signals

from . import tasks, worker
from .broker import transport_for
from .settings import TASK_NAME, Settings, model_name_for, queue_name
from .store import JobStore

log = logging.getLogger("llamaq.worker")


def make_app(settings: Settings) -> Celery:
    app = Celery("llamaq", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        broker_transport=transport_for(settings.redis_url),  # survives a closing connection
        # At least once: a message is acknowledged once its jobs are claimed in their
        # records; if the worker dies first, Redis hands it out again after the
        # visibility timeout. A claimed job whose run is lost is the reconciler's.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,  # results live in the job records, not in Celery
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        # One message per pool thread; a batch message waits in its thread while the
        # worker holds `capacity` jobs, so the rest stay in Redis for other workers.
        worker_prefetch_multiplier=1,
        worker_pool="threads",
        worker_concurrency=settings.pool_threads,
        task_default_queue="llamaq.default",
        task_create_missing_queues=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a Redis outage of any length: wait for it, never exit
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            # queues in the order the worker lists them: interactive before batch
            "queue_order_strategy": "priority",
            "unacked_restore_interval": settings.restore_interval,
            "unacked_restore_throttle": 1,
            # kombu's restore pass holds a Redis mutex; a worker killed while holding it
            # (default expiry 300 s) would stall every restore of lost messages that long.
            "unacked_mutex_expire": 15,
            **settings.redis_options(),  # a frozen Redis: publish and ack time out, the consumer reconnects
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    app.task(name=TASK_NAME, acks_late=True, ignore_result=True)(tasks.run_jobs)
    return app


settings = Settings.from_env()
app = make_app(settings)



# ---------------------------------------------------------------- worker signals


@signals.celeryd_after_setup.connect
def _select_queues(sender, instance, conf, **kwargs) -> None:
    """Consume this model's queues, interactive first (listed first = polled first)."""
    model = settings.model_name or model_name_for(settings.model)
    queues = instance.app.amqp.queues
    names = [queue_name(model, "interactive"), queue_name(model, "batch")]
    explicit = queues._consume_from is not None  # -Q given: keep those too
    for n in names:
        queues.select_add(n) if explicit else queues.add(n)
    if not explicit:
        queues.select(names)


@signals.worker_init.connect
def _load_engine(sender, **kwargs) -> None:
    """worker_process_init is not sent for the threads pool: load the engine here
    (main process, before consuming). Celery logs and ignores an error raised in
    a signal handler, and the worker would then take messages it cannot run and
    drop them: a worker that cannot start its engine exits instead."""
    try:
        _start_runtime(sender)
    except Exception as e:
        log.critical("the worker cannot serve (%s: %s); exiting", type(e).__name__, e)
        raise SystemExit(1) from e


def _start_runtime(sender) -> None:
    from engine import Engine, EngineConfig

    if "thread" not in str(sender.pool_cls).lower():
        raise RuntimeError(f"llamaq workers need the threads pool (--pool threads), not {sender.pool_cls!r}: "
                           "one engine per process is shared by all the jobs it holds")
    s, app = settings, sender.app
    cfg = EngineConfig(model_path=s.model, n_parallel=s.parallel, n_gpu_layers=s.n_gpu_layers)
    if s.n_ctx:
        cfg.n_ctx = s.n_ctx
    log.info("loading %s (parallel %d, %d pool threads)", cfg.resolved_model_path(), s.parallel, s.pool_threads)
    engine = Engine(cfg)
    store = JobStore.from_url(s.redis_url, s)
    worker.install(worker.WorkerRuntime(engine, store, s, s.model_name or engine.model_name,
                                        publish=lambda ids, m, p: tasks.send_jobs(app, ids, m, p),
                                        reserved=_reserved_job_ids))


def _reserved_job_ids() -> list[str]:
    """The jobs of the messages this worker has taken and not finished with:
    prefetched, or in a pool thread waiting for room (not acknowledged yet)."""
    from celery.worker import state

    for _ in range(3):
        try:
            reqs = list(state.reserved_requests)  # pool threads add to it meanwhile
            break
        except RuntimeError:
            continue
    else:
        return []
    return [jid for req in reqs if req.name == TASK_NAME and req.args for jid in req.args[0]]


@signals.worker_ready.connect
def _register(sender, **kwargs) -> None:
    """Heartbeat from when the consumer takes messages: a registered worker is one
    that serves (the API's health and a job's "no worker serves" detail rely on it)."""
    if worker._runtime is not None:
        worker._runtime.start()


@signals.worker_shutting_down.connect
def _leave(sig, how, **kwargs) -> None:
    """Warm shutdown: finish the jobs started here, start no more."""
    if worker._runtime is not None and how == "Warm":
        worker._runtime.leave()


@signals.worker_shutdown.connect
def _shutdown(sender, **kwargs) -> None:
    rt = worker._runtime
    if rt is not None:
        if not rt.drain(settings.drain_s):  # the consumer has stopped: finish what was started
            log.warning("shutting down with jobs unfinished; the reconciler runs them elsewhere")
        rt.close()
        rt.engine.close()
        worker.install(None)
