"""The published contract, /openapi.json: request bodies from jobs.schemas (the
models that validate them), OpenAI's error body as one shared component, the
errors each operation can answer, and the bearer scheme when keys are set."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel
from pydantic.json_schema import models_json_schema

from jobs import schemas

REF = "#/components/schemas/{model}"


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """OpenAI's error body."""

    error: ErrorDetail


_WHY = {
    400: "The request is malformed or a field is invalid; `param` names the field",
    401: "A missing or unknown API key",
    404: "No such object or model (another API key's objects are not visible)",
    409: "The job was cancelled, or the batch to cancel has already finished",
    413: "The body or an uploaded file is over its limit",
    415: "The body is declared as another media type than application/json",
    429: "A queue or a per-key limit is full; retry after `Retry-After` seconds",
    503: "No worker serves the model right now; retry after `Retry-After` seconds",
    504: "The job did not finish in time",
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}


def errors(*statuses: int) -> dict:
    """FastAPI `responses=` for these error statuses (401 is added to each when keys are set)."""
    out = {}
    for s in statuses:
        out[s] = {"model": ErrorResponse, "description": _WHY[s]}
        if s in (429, 503):
            out[s]["headers"] = _RETRY_AFTER
    return out


JSON_ERRORS = (400, 413, 429)  # any operation reading a JSON body, or counted per key


def json_body(model: type[BaseModel] | str) -> dict:
    """openapi_extra for a route that reads its JSON body itself (to bound its
    size while reading), documenting it as the model that validates it."""
    name = model if isinstance(model, str) else model.__name__
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": REF.format(model=name)}}}}}


def streaming_ok(description: str) -> dict:
    return {200: {"description": description, "content": {
        "application/json": {}, "text/event-stream": {
            "schema": {"type": "object", "properties": {"data": {"type": "string"}},
                       "description": "an event: `data:` one of OpenAI's chunks as JSON, `[DONE]` last; "
                                      "`: keep-alive` comments come while the request waits"}}}}}


Priority = Literal["interactive", "batch"]


class _Job(BaseModel):
    model_config = ConfigDict(extra="allow")
    priority: Priority | None = Field(None, description="default: the server's (batch unless configured)")


class ChatJob(_Job):
    endpoint: Literal["/v1/chat/completions"]
    body: schemas.ChatRequest


class CompletionJob(_Job):
    endpoint: Literal["/v1/completions"]
    body: schemas.CompletionRequest


class EmbeddingJob(_Job):
    endpoint: Literal["/v1/embeddings"]
    body: schemas.EmbeddingRequest


class TranslationJob(_Job):
    endpoint: Literal["/v1/translations"]
    body: schemas.TranslationRequest


class JobCreate(RootModel[Annotated[ChatJob | CompletionJob | EmbeddingJob | TranslationJob,
                                    Field(discriminator="endpoint")]]):
    """POST /v1/jobs: one request body for an endpoint, run as a job to poll. `stream` is ignored."""


BODY_MODELS: list[type[BaseModel]] = [*schemas.REQUESTS.values(), JobCreate]


def finish(doc: dict, *, extra_models: list[type[BaseModel]], secured: bool) -> dict:
    """FastAPI's document, completed: body models as components, FastAPI's own
    422 (never answered: validation errors are 400s) gone, 401 and the bearer
    scheme on /v1 operations when keys are set."""
    models = [*BODY_MODELS, ErrorResponse, *extra_models]
    _, defs = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    components = doc.setdefault("components", {})
    found = components.setdefault("schemas", {})
    found.update(defs.get("$defs", {}))
    for name in ("HTTPValidationError", "ValidationError"):
        found.pop(name, None)
    if secured:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, ops in doc.get("paths", {}).items():
        for op in ops.values():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            for status in _implied(path, op):
                responses.setdefault(str(status), _error_doc(status))
            if secured and path.startswith("/v1/"):
                op["security"] = [{"bearer": []}]
                responses["401"] = _error_doc(401)
    return doc


def _implied(path: str, op: dict) -> list[int]:
    """Errors every such operation can answer: a bad query or body, a missing object, an oversized body."""
    out = [400] if op.get("parameters") or op.get("requestBody") else []
    if "{" in path or op.get("requestBody"):  # an object named in the path or the body (a file, a model)
        out.append(404)
    if op.get("requestBody"):
        out += [413, 429]
        if "application/json" in op["requestBody"].get("content", {}):
            out.append(415)
    return out


def _error_doc(status: int) -> dict:
    doc = {"description": _WHY[status], "content": {
        "application/json": {"schema": {"$ref": REF.format(model="ErrorResponse")}}}}
    if status in (429, 503):
        doc["headers"] = _RETRY_AFTER
    return doc
