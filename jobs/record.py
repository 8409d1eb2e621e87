"""The job record: one job's state, as stored and as returned to callers."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
Priority = Literal["interactive", "batch"]

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
PRIORITIES = ("interactive", "batch")
KINDS = ("chat", "completion", "embedding", "translation")


def new_job_id() -> str:
    """'job_' + 24 hex chars: random, URL-safe, unique enough for Redis keys."""
    return "job_" + os.urandom(12).hex()


@dataclass
class JobRecord:
    id: str
    kind: str
    model: str | None
    status: str = "queued"
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    worker: str | None = None
    progress: dict | None = None  # e.g. {"completion_tokens": n} or {"done": k, "total": m}
    result: dict | None = None  # the OpenAI response body
    error: dict | None = None  # OpenAI error dict {"message", "type", "param", "code"}
    priority: str = "interactive"
    batch_id: str | None = None
    custom_id: str | None = None  # a batch line's custom_id
    # Why a queued job is not moving, e.g. "no worker serves model 'x'"; None otherwise.
    detail: str | None = None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "JobRecord":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class Recent:
    """The latest `keep` values put, by key (thread-safe): what a process
    remembers having written, to tell a record Redis lost from one that never was."""

    def __init__(self, keep: int = 10_000):
        self.keep, self._d, self._lock = keep, OrderedDict(), threading.Lock()

    def put(self, key: str, value) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            if len(self._d) > self.keep:
                self._d.popitem(last=False)

    def get(self, key: str):
        with self._lock:
            return self._d.get(key)
