"""A finished job's record as an HTTP answer: its OpenAI body, or its error."""

from __future__ import annotations

from types import SimpleNamespace

from .batches import error_body
from .errors import APIError


def record_dict(rec) -> dict:
    return rec if isinstance(rec, dict) else rec.to_dict()


def as_record(rec):
    """Records arrive as JobRecord objects or, through some transports, as dicts."""
    return SimpleNamespace(**rec) if isinstance(rec, dict) else rec


def job_error(rec) -> APIError:
    """The APIError a failed or cancelled job answers with."""
    err = error_body(rec)
    status = err.pop("_status", 409)
    return APIError(status, err["message"], type=err["type"], param=err["param"], code=err["code"])
