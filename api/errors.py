"""OpenAI-shaped errors: {"error": {"message", "type", "param", "code"}} with the right status.

Every failure the API can answer goes through APIError; exceptions from the jobs
backend and the engine are translated here, so routes never build error bodies."""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = logging.getLogger("llamaq.api")


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> Response:
        return Response(
            orjson.dumps(self.body()), status_code=self.status, media_type="application/json", headers=self.headers
        )


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def not_found(message: str, param: str | None = None, code: str = "not_found") -> APIError:
    return APIError(404, message, param=param, code=code)


def unauthorized(message: str) -> APIError:
    return APIError(401, message, type="invalid_request_error", code="invalid_api_key")


def too_large(message: str, param: str | None = None) -> APIError:
    return APIError(413, message, param=param, code="request_too_large")


def unsupported_media_type(message: str) -> APIError:
    return APIError(415, message, code="unsupported_media_type")


def queue_full(message: str = "the job queue is full; retry later", retry_after: int = 1) -> APIError:
    return APIError(
        429, message, type="rate_limit_error", code="queue_full", headers={"Retry-After": str(retry_after)}
    )


def unavailable(message: str, code: str = "no_worker") -> APIError:
    return APIError(503, message, type="service_unavailable_error", code=code, headers={"Retry-After": "5"})


# What a jobs error's code means for its HTTP status (others: by its type).
CODE_STATUS = {"model_not_found": 404, "not_found": 404, "queue_full": 429, "no_worker": 503, "job_lost": 503,
               "context_length_exceeded": 400}


def from_error_dict(d: dict) -> APIError:
    """The APIError for an OpenAI error dict as the jobs layer records it."""
    code, type_ = d.get("code"), d.get("type") or "server_error"
    status = CODE_STATUS.get(code) or (400 if type_ == "invalid_request_error" else 500)
    message = str(d.get("message") or "the job failed")
    if status == 429:
        return queue_full(message)
    if status == 503:
        return unavailable(message, code=code or "no_worker")
    return APIError(status, message, type=type_, param=d.get("param"), code=code)


def from_exception(exc: BaseException) -> APIError | None:
    """Translate a jobs/engine exception into an APIError; None if it is not one we know."""
    from engine import errors as ee
    from jobs import errors as je

    if isinstance(exc, APIError):
        return exc
    param = getattr(exc, "param", None)
    message = str(exc) or type(exc).__name__
    if isinstance(exc, je.JobError):
        return from_error_dict(exc.to_dict())
    if isinstance(exc, ee.PromptTooLong):
        return APIError(400, message, param=param or "messages", code="context_length_exceeded")
    if isinstance(exc, ee.InvalidRequest):
        return bad_request(message, param)
    if isinstance(exc, ee.QueueFull):
        return queue_full(message)
    if isinstance(exc, (ee.EngineDead, ee.ModelLoadError)):
        return unavailable(message, code="engine_unavailable")
    if _is_redis_down(exc):
        return unavailable(f"the queue's Redis is unreachable: {message}", code="backend_unavailable")
    if isinstance(exc, TimeoutError):
        return APIError(504, message, type="timeout_error", code="timeout")
    return None


def _is_redis_down(exc: BaseException) -> bool:
    """redis-py's errors, and kombu's when Celery cannot publish a job's message."""
    try:
        from kombu.exceptions import OperationalError
        from redis.exceptions import ConnectionError, TimeoutError as RedisTimeout
    except ImportError:
        return False
    return isinstance(exc, (ConnectionError, RedisTimeout, OperationalError))


_STATUS_CODES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
}


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errs = exc.errors()
    if not errs:
        return "invalid request", None
    first = errs[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    param = ".".join(loc) or None
    msg = first.get("msg", "invalid value")
    return (f"{param}: {msg}" if param else msg), param


def _allowed(request: Request) -> list[str]:
    """Every documented method some route takes at this path (Starlette names only the
    first route's); undocumented aliases are not advertised."""
    from starlette.routing import Match

    def leaves(routes):  # included routers (no prefixes here) hold their routes in original_router
        for route in routes:
            inner = getattr(getattr(route, "original_router", route), "routes", None)
            yield from leaves(inner) if inner is not None else (route,)

    methods: set[str] = set()
    for route in leaves(request.app.router.routes):
        if not getattr(route, "methods", None) or not getattr(route, "include_in_schema", True):
            continue
        if route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods
    return sorted(methods)


def install(app: FastAPI) -> None:
    """OpenAI-shaped bodies for our errors, FastAPI's validation errors, Starlette's
    HTTP errors (404 route, 405 method) and, as a last resort, anything unexpected."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        message, param = _validation_message(exc)
        return bad_request(message, param).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        type_, code = _STATUS_CODES.get(exc.status_code, ("invalid_request_error", None))
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = dict(exc.headers or {})
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.method} {request.url.path}"
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed(request))
            detail = f"{request.method} is not allowed on {request.url.path}; allowed: {headers['Allow']}"
        return APIError(exc.status_code, detail, type=type_, code=code, headers=headers).response()

    async def _known(request: Request, exc: Exception):
        mapped = from_exception(exc)
        if mapped is None:
            return await _unexpected(request, exc)
        return mapped.response()

    from engine.errors import EngineError
    from jobs.errors import JobError

    for cls in (EngineError, JobError, TimeoutError):
        app.add_exception_handler(cls, _known)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        mapped = from_exception(exc)
        if mapped is not None:
            return mapped.response()
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return APIError(500, f"internal error: {type(exc).__name__}", type="server_error").response()
