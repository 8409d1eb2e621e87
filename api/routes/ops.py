"""GET /health (200 only when something can serve) and GET /metrics (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import PlainTextResponse, Response

from ..deps import json_response, state
from ..metrics import CONTENT_TYPE

router = APIRouter()


_HEALTH = {"description": "What serves: {status, models, ...}", "content": {"application/json": {
    "schema": {"type": "object", "properties": {"status": {"type": "string", "enum": ["ok", "unavailable"]}},
               "required": ["status"]}}}}


@router.get("/health", responses={200: _HEALTH, 503: {**_HEALTH, "description": "Nothing can serve right now"}})
async def health(request: Request):
    st = state(request)
    try:
        info = dict(await st.bridge.call(st.backend.health))
        if info.get("status") == "unavailable":  # Redis unreachable: answer now, no second timeout
            return json_response(info, status=503)
        models = await st.bridge.call(st.backend.models)
    except Exception as e:  # the backend itself is unreachable (Redis down): not ready
        return json_response({"status": "unavailable", "error": f"{type(e).__name__}: {e}"}, status=503)
    ready = bool(models) and info.get("status", "ok") == "ok" and info.get("ready", True) is not False
    return json_response({**info, "status": "ok" if ready else "unavailable", "models": models},
                         status=200 if ready else 503)


@router.get("/metrics", response_class=PlainTextResponse, responses={200: {
    "description": "Prometheus text exposition", "content": {"text/plain": {"schema": {"type": "string"}}}}})
async def metrics(request: Request):
    st = state(request)
    try:
        backend = await st.bridge.call(st.backend.metrics)
    except Exception:  # still expose the API's own numbers, and llamaq_backend_up 0
        backend = None
    return Response(st.metrics.render(backend), media_type=CONTENT_TYPE)
