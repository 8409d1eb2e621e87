"""Errors of the jobs layer. Each carries what OpenAI's error body needs."""

from __future__ import annotations


class JobError(Exception):
    """Base class. type/code follow OpenAI's error body."""

    type = "server_error"
    code: str | None = None

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param

    def to_dict(self) -> dict:
        return {"message": self.message, "type": self.type, "param": self.param, "code": self.code}


class JobValidationError(JobError, ValueError):
    """The job body is wrong; param names the offending field (dotted path)."""

    type = "invalid_request_error"


class ModelNotFound(JobError):
    """No engine here serves the requested model (in-process backend)."""

    type = "invalid_request_error"
    code = "model_not_found"


class JobNotFound(JobError, KeyError):
    type = "invalid_request_error"
    code = "not_found"


class JobLost(JobError):
    """A job's record vanished while it was awaited: its Redis lost its data
    (restarted without persistence, flushed). The client should submit it again."""

    code = "job_lost"


def error_dict(exc: BaseException) -> dict:
    """OpenAI-shaped error dict for any exception a job run can raise."""
    if isinstance(exc, JobError):
        return exc.to_dict()
    from engine.errors import InvalidRequest, PromptTooLong, QueueFull

    if isinstance(exc, PromptTooLong):
        return {"message": str(exc), "type": "invalid_request_error", "param": exc.param,
                "code": "context_length_exceeded"}
    if isinstance(exc, InvalidRequest):
        return {"message": str(exc), "type": "invalid_request_error", "param": exc.param, "code": None}
    if isinstance(exc, QueueFull):
        return {"message": str(exc) or "engine queue full", "type": "server_error", "param": None,
                "code": "queue_full"}
    return {"message": f"{type(exc).__name__}: {exc}", "type": "server_error", "param": None, "code": None}


def is_client_error(exc: BaseException) -> bool:
    """True when retrying cannot help: the request itself is wrong."""
    from engine.errors import InvalidRequest

    return isinstance(exc, (JobValidationError, InvalidRequest, ModelNotFound))
