"""A finished job's record as an HTTP answer: its OpenAI body, or its error."""

from __future__ import annotations

from types import SimpleNamespace

from .errors import APIError, from_error_dict


def record_dict(rec) -> dict:
    return rec if isinstance(rec, dict) else rec.to_dict()


def as_record(rec):
    """Records arrive as JobRecord objects or, through some transports, as dicts."""
    return SimpleNamespace(**rec) if isinstance(rec, dict) else rec


def job_error(rec) -> APIError:
    """The APIError a failed or cancelled job answers with."""
    if rec.status == "cancelled":
        return APIError(409, "the job was cancelled", code="cancelled")
    if isinstance(rec.error, dict):
        return from_error_dict(rec.error)
    return APIError(500, str(rec.error or "the job failed"), type="server_error", code="job_failed")
