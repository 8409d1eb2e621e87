"""The Celery app: Redis broker, one task type (llamaq.run_jobs), queues per
model and priority (llamaq.<model>.interactive / llamaq.<model>.batch).

Start a worker either way:
    llamaq worker --model PATH [--parallel N] [--redis URL]
    LLAMAQ_MODEL=PATH LLAMAQ_REDIS_URL=URL celery -A jobs.celery_app worker
(the second gets the threads pool, its width and its queues from jobs/worker.py's
signal handlers and the config below).
"""

from __future__ import annotations

from celery import Celery

from .settings import Settings

TASK_NAME = "llamaq.run_jobs"


def make_app(settings: Settings) -> Celery:
    app = Celery("llamaq", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        # At least once: a message is acknowledged after its jobs ran; if the worker
        # dies first, Redis hands it out again after the visibility timeout.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,  # results live in the job records, not in Celery
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        # Each pool thread holds one message: the engine has a few jobs waiting
        # beyond its sequences, and the rest stay in Redis for other workers.
        worker_prefetch_multiplier=1,
        worker_pool="threads",
        worker_concurrency=settings.pool_threads,
        task_default_queue="llamaq.default",
        task_create_missing_queues=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            # queues in the order the worker lists them: interactive before batch
            "queue_order_strategy": "priority",
            "unacked_restore_interval": settings.restore_interval,
            "unacked_restore_throttle": 1,
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


settings = Settings.from_env()
app = make_app(settings)

from . import tasks as _tasks  # noqa: E402,F401  registers llamaq.run_jobs on app
from . import worker as _worker  # noqa: E402,F401  worker signal handlers
