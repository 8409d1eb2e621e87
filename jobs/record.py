"""The job record: one job's state, as stored and as returned to callers."""

from __future__ import annotations

import os
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
