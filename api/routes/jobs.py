"""The single-job shortcut: POST /v1/jobs {endpoint, body} -> 202 and an id to
poll; GET /v1/jobs/{id}; POST /v1/jobs/{id}/cancel cancels (as batches do;
DELETE /v1/jobs/{id} too, undocumented, for older clients).
GET /v1/jobs lists the caller's recent jobs."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from jobs import schemas
from jobs.errors import JobValidationError

from ..batches import ENDPOINT_KINDS
from ..contract import JSON_ERRORS, JobCreate, errors
from ..contract import json_body as json_body_doc
from ..deps import current_owner, json_body, json_response, state
from ..errors import not_found
from ..jobresult import record_dict
from .inference import prepare

router = APIRouter()


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


@router.post("/v1/jobs", status_code=202, openapi_extra=json_body_doc(JobCreate),
             responses=errors(*JSON_ERRORS, 404, 503))
async def create_job(request: Request, owner: str = Depends(current_owner)):
    st = state(request)
    raw = await json_body(request)
    job = schemas.check(JobCreate, raw).root
    priority = job.priority or st.config.default_job_priority
    kind = ENDPOINT_KINDS[job.endpoint]
    body = dict(raw["body"], stream=False)  # a job is polled, never streamed
    try:
        body = await prepare(request, kind, body)
    except JobValidationError as e:
        raise JobValidationError(e.message, f"body.{e.param}" if e.param else "body") from None
    release = await st.limits.admit_job(owner, st.bridge, st.backend)
    try:
        rec = await st.bridge.call(st.backend.submit, kind, body, priority=priority)
        st.limits.track(owner, rec.id)
    finally:
        release()
    await st.bridge.call(st.store.add_job, owner, rec.id)
    return json_response(job_obj(rec), status=202)


@router.get("/v1/jobs/{job_id}", responses=errors(404))
async def get_job(job_id: str, request: Request, owner: str = Depends(current_owner)):
    return json_response(job_obj(await owned_job(request, job_id, owner)))


@router.post("/v1/jobs/{job_id}/cancel", responses=errors(404))
async def cancel_job(job_id: str, request: Request, owner: str = Depends(current_owner)):
    st = state(request)
    await owned_job(request, job_id, owner)
    await st.bridge.call(st.backend.cancel, job_id)
    return json_response(job_obj(await st.bridge.call(st.backend.get, job_id)))


# Kept for clients written against the earlier API; not in the published contract.
@router.delete("/v1/jobs/{job_id}", include_in_schema=False)
async def delete_job(job_id: str, request: Request, owner: str = Depends(current_owner)):
    return await cancel_job(job_id, request, owner)


@router.get("/v1/jobs", responses=errors(400))
async def list_jobs(request: Request, limit: int = Query(20, ge=1, le=1000), owner: str = Depends(current_owner)):
    st = state(request)

    def load() -> list[dict]:
        recs = (st.backend.get(j) for j in st.store.recent_jobs(owner, limit))
        return [job_obj(r) for r in recs if r is not None]

    return json_response({"object": "list", "data": await st.bridge.call(load)})
