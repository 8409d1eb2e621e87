"""OpenAI Batches: create from an uploaded JSONL file, get, list, cancel."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from ..batches import COMPLETION_WINDOWS, ENDPOINT_KINDS, new_batch, public
from ..deps import current_owner, json_body, json_response, json_schema_body, state
from ..contract import errors
from ..errors import APIError, bad_request, not_found
from .files import owned_file

router = APIRouter()

_CREATE_SCHEMA = json_schema_body({
    "input_file_id": {"type": "string", "minLength": 1}, "endpoint": {"type": "string", "enum": list(ENDPOINT_KINDS)},
    "completion_window": {"type": "string", "enum": list(COMPLETION_WINDOWS)},
    "metadata": {"type": ["object", "null"], "maxProperties": 16, "propertyNames": {"maxLength": 64},
                 "additionalProperties": {"type": "string", "maxLength": 512}}},
    ["input_file_id", "endpoint", "completion_window"])


async def owned_batch(request: Request, batch_id: str, owner: str) -> dict:
    """The batch as callers see it (live counts), if it is owner's; else 404."""
    st = state(request)
    batch = await st.bridge.call(st.batches.get, batch_id)
    if batch is None or batch.get("owner", "") != owner:
        raise not_found(f"no batch with id {batch_id!r}", "batch_id")
    return batch


def _check_metadata(metadata) -> dict | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise bad_request("metadata must be an object of string values", "metadata")
    if len(metadata) > 16:
        raise bad_request("metadata holds at most 16 keys", "metadata")
    for k, v in metadata.items():
        if len(k) > 64 or not isinstance(v, str) or len(v) > 512:
            raise bad_request(f"metadata.{k[:64]}: keys are at most 64 characters, values strings of at most "
                              "512", "metadata")
    return metadata


@router.post("/v1/batches", openapi_extra=_CREATE_SCHEMA)
async def create_batch(request: Request, owner: str = Depends(current_owner)):
    body = await json_body(request)
    file_id, endpoint, window = body.get("input_file_id"), body.get("endpoint"), body.get("completion_window")
    if not isinstance(file_id, str) or not file_id:
        raise bad_request("input_file_id is required", "input_file_id")
    if not isinstance(endpoint, str) or endpoint not in ENDPOINT_KINDS:
        raise bad_request(f"endpoint must be one of {', '.join(ENDPOINT_KINDS)}", "endpoint")
    if not isinstance(window, str) or window not in COMPLETION_WINDOWS:
        raise bad_request(f"completion_window must be one of {', '.join(COMPLETION_WINDOWS)}",
                          "completion_window")
    metadata = _check_metadata(body.get("metadata"))
    meta = await owned_file(request, file_id, owner)
    if meta["purpose"] != "batch":
        raise bad_request(f"file {file_id} has purpose {meta['purpose']!r}; a batch needs purpose 'batch'",
                          "input_file_id")
    batch = new_batch(owner, file_id, endpoint, window, metadata)
    st = state(request)
    async with st.limits.batch_slot(owner):  # per-key open batches (429)
        await st.limits.check_batches(owner, st.bridge, st.store)
        await st.bridge.call(st.batches.create, batch)
    return json_response(public(batch))


@router.get("/v1/batches/{batch_id}")
async def get_batch(batch_id: str, request: Request, owner: str = Depends(current_owner)):
    return json_response(public(await owned_batch(request, batch_id, owner)))


@router.get("/v1/batches")
async def list_batches(request: Request, after: str | None = None, limit: int = Query(20, ge=1, le=100),
                       owner: str = Depends(current_owner)):
    st = state(request)
    batches = await st.bridge.call(lambda: [st.batches.machine.view(b) for b in st.store.list_batches(owner)])
    if after:
        ids = [b["id"] for b in batches]
        batches = batches[ids.index(after) + 1:] if after in ids else []
    page = batches[:limit]
    return json_response({"object": "list", "data": [public(b) for b in page],
                          "first_id": page[0]["id"] if page else None,
                          "last_id": page[-1]["id"] if page else None, "has_more": len(batches) > limit})


@router.post("/v1/batches/{batch_id}/cancel", responses=errors(404, 409))
async def cancel_batch(batch_id: str, request: Request, owner: str = Depends(current_owner)):
    status = (await owned_batch(request, batch_id, owner))["status"]
    if status in ("completed", "failed", "expired"):  # OpenAI's 409; cancelling again is a no-op
        raise APIError(409, f"Cannot cancel a batch with status '{status}'.", param="batch_id")
    batch = await state(request).bridge.call(state(request).batches.cancel, batch_id)
    return json_response(public(batch))
