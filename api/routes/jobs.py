"""The single-job shortcut: POST /v1/jobs {endpoint, body} -> 202 and an id to
poll; GET /v1/jobs/{id}; DELETE /v1/jobs/{id} cancels. GET /v1/jobs lists the
caller's recent jobs."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from ..batches import ENDPOINT_KINDS
from ..deps import current_owner, json_body, json_response, json_schema_body, state
from ..errors import bad_request, not_found
from ..jobresult import record_dict
from .inference import prepare

router = APIRouter()

_CREATE_SCHEMA = json_schema_body({
    "endpoint": {"type": "string", "enum": list(ENDPOINT_KINDS)}, "body": {"type": "object"},
    "priority": {"type": "string", "enum": ["interactive", "batch"]}}, ["endpoint", "body"])


def job_obj(rec) -> dict:
    d = record_dict(rec)
    d.pop("body", None)
    return {"object": "job", **d}


async def owned_job(request: Request, job_id: str, owner: str):
    st = state(request)
    job_owner = await st.bridge.call(st.store.job_owner, job_id)
    if st.config.api_keys and job_owner != owner:
        raise not_found(f"no job with id {job_id!r}", "job_id")
    rec = await st.bridge.call(st.backend.get, job_id)
    if rec is None:
        raise not_found(f"no job with id {job_id!r}", "job_id")
    return rec


@router.post("/v1/jobs", status_code=202, openapi_extra=_CREATE_SCHEMA)
async def create_job(request: Request, owner: str = Depends(current_owner)):
    st = state(request)
    req = await json_body(request)
    endpoint, body = req.get("endpoint"), req.get("body")
    if not isinstance(endpoint, str) or endpoint not in ENDPOINT_KINDS:
        raise bad_request(f"endpoint must be one of {', '.join(ENDPOINT_KINDS)}", "endpoint")
    if not isinstance(body, dict):
        raise bad_request("body must be the endpoint's request body, a JSON object", "body")
    if body.get("stream"):
        raise bad_request("a job cannot stream; poll GET /v1/jobs/{id} for its result", "body.stream")
    priority = req.get("priority", st.config.default_job_priority)
    if not isinstance(priority, str) or priority not in ("interactive", "batch"):
        raise bad_request("priority must be 'interactive' or 'batch'", "priority")
    kind = ENDPOINT_KINDS[endpoint]
    body = await prepare(request, kind, body)
    rec = await st.bridge.call(st.backend.submit, kind, body, priority=priority)
    await st.bridge.call(st.store.add_job, owner, rec.id)
    return json_response(job_obj(rec), status=202)


@router.get("/v1/jobs/{job_id}")
async def get_job(job_id: str, request: Request, owner: str = Depends(current_owner)):
    return json_response(job_obj(await owned_job(request, job_id, owner)))


@router.delete("/v1/jobs/{job_id}")
async def cancel_job(job_id: str, request: Request, owner: str = Depends(current_owner)):
    st = state(request)
    await owned_job(request, job_id, owner)
    await st.bridge.call(st.backend.cancel, job_id)
    return json_response(job_obj(await st.bridge.call(st.backend.get, job_id)))


@router.get("/v1/jobs")
async def list_jobs(request: Request, limit: int = Query(20, ge=1, le=1000), owner: str = Depends(current_owner)):
    st = state(request)

    def load() -> list[dict]:
        recs = (st.backend.get(j) for j in st.store.recent_jobs(owner, limit))
        return [job_obj(r) for r in recs if r is not None]

    return json_response({"object": "list", "data": await st.bridge.call(load)})
