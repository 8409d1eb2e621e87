"""Per-request helpers shared by the routes: app state, the caller's identity,
JSON bodies and JSON answers."""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field

import orjson
from fastapi import Request
from starlette.responses import Response

from .errors import bad_request, too_large, unauthorized, unsupported_media_type


def _env_int(name: str, default: int):
    """A default read from LLAMAQ_<name> when the config is made."""
    return field(default_factory=lambda: int(os.environ.get(f"LLAMAQ_{name}") or default))


@dataclass
class ApiConfig:
    api_keys: list[str] = field(default_factory=list)  # empty: no auth
    max_body_bytes: int = 32 * 1024 * 1024  # JSON request bodies
    default_job_priority: str = "batch"  # /v1/jobs without "priority"
    # Per API key (0: none): jobs queued or running through this process, open batches.
    max_jobs_per_key: int = _env_int("MAX_JOBS_PER_KEY", 1024)
    max_batches_per_key: int = _env_int("MAX_BATCHES_PER_KEY", 32)
    retry_after_s: int = _env_int("RETRY_AFTER_S", 2)  # batches: ten times this
    keepalive_s: float = 10.0  # SSE comment while a streaming request waits in the queue
    max_tokens: int = _env_int("MAX_TOKENS", 0)  # tokens one request may generate (0: up to the context)


def state(request: Request):
    return request.app.state.llamaq


def owner_of_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def current_owner(request: Request) -> str:
    """"" without configured keys; else who the Bearer key belongs to (401 if none)."""
    keys = state(request).config.api_keys
    if not keys:
        return ""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    token = token.strip()
    if not any(hmac.compare_digest(token.encode(), k.encode()) for k in keys):
        raise unauthorized("invalid API key")
    return owner_of_key(token)


_READ_AS_JSON = ("", "application/json", "application/x-www-form-urlencoded")


def _check_json_type(request: Request) -> None:
    """415 for a body declared as another media type. One with none declared, or with
    curl's default for `-d` (a form type), is read as JSON: `curl -d '{...}'` works."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in _READ_AS_JSON and not ctype.endswith("+json"):
        raise unsupported_media_type(f"Content-Type {ctype!r} is not supported here; send the body as "
                                     "application/json")


async def json_body(request: Request) -> dict:
    _check_json_type(request)
    limit = state(request).config.max_body_bytes
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise too_large(f"request body is {length} bytes; the limit is {limit}")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise too_large(f"request body is over the limit of {limit} bytes")
    if not raw.strip():
        raise bad_request("the request body is empty; send a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise bad_request(f"the request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    return body


def json_response(obj, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS), status_code=status,
                    media_type="application/json", headers=headers)


def json_schema_body(properties: dict, required: list[str] | None = None) -> dict:
    """openapi_extra for routes that read their JSON body themselves (validation
    is the jobs layer's), so the schema still documents it."""
    schema = {"type": "object", "properties": properties, "additionalProperties": True}
    if required:
        schema["required"] = required
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
