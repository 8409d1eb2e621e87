"""The one task type: run a list of jobs (one id for a single submission,
many for a bulk one). Per-job state lives in the job records, so a message
delivered twice runs nothing twice. Registered on an app by make_app
(jobs/celery_app.py); this module imports no Celery app."""

from __future__ import annotations

from .settings import TASK_NAME, queue_name
from .worker import runtime


def run_jobs(job_ids: list[str], priority: str = "batch") -> None:
    runtime().run_message(job_ids, priority)


def send_jobs(celery_app, job_ids: list[str], model: str, priority: str, producer=None) -> None:
    """Publish one message carrying job_ids to the model's queue for priority."""
    celery_app.send_task(TASK_NAME, args=[job_ids], kwargs={"priority": priority},
                         queue=queue_name(model, priority), producer=producer, ignore_result=True)
