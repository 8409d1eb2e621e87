"""OpenAI Files: upload (multipart), list, get, content, delete. A file is
visible only to the API key that uploaded it (and its batches' outputs)."""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from ..contract import errors
from ..deps import current_owner, json_response, state
from ..errors import bad_request, not_found, too_large
from ..ids import new_id
from ..upload import read_upload

router = APIRouter()

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
_UPLOAD_DOC = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file", "purpose"],
    "properties": {"file": {"type": "string", "format": "binary"},
                   "purpose": {"type": "string", "enum": list(PURPOSES)}}}}}}}


def public(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k != "owner"}


async def owned_file(request: Request, file_id: str, owner: str) -> dict:
    st = state(request)
    meta = await st.bridge.call(st.store.get_file, file_id)
    if meta is None or meta.get("owner", "") != owner:
        raise not_found(f"no file with id {file_id!r}", "file_id")
    return meta


@router.post("/v1/files", openapi_extra=_UPLOAD_DOC, responses=errors(400, 413, 429))
async def upload(request: Request, owner: str = Depends(current_owner)):
    st = state(request)
    limits = st.batch_limits
    up = await read_upload(request, limits.max_bytes)
    try:
        purpose = up.fields.get("purpose")
        if up.file is None:
            raise bad_request("the form has no `file` part", "file")
        if purpose not in PURPOSES:
            raise bad_request(f"purpose must be one of {', '.join(PURPOSES)}, not {purpose!r}", "purpose")
        if purpose == "batch" and up.lines > limits.max_lines:
            raise too_large(f"the batch file has {up.lines} requests; a batch holds at most {limits.max_lines}",
                            "file")
        meta = {"id": new_id("file-"), "object": "file", "bytes": up.size, "created_at": int(time.time()),
                "filename": up.filename or "upload.jsonl", "purpose": purpose, "status": "processed",
                "expires_at": None, "status_details": None, "owner": owner}
        await st.bridge.call(_store_file, st.store, meta, up.file)
    finally:
        up.close()
    return json_response(public(meta))


def _store_file(store, meta: dict, f) -> None:
    """Copied to the store in pieces, never the whole file in memory."""
    writer = store.open_file_writer(meta)
    while chunk := f.read(1 << 20):
        writer.write(chunk)
    writer.commit(meta)


@router.get("/v1/files", responses=errors(400))
async def list_files(request: Request, purpose: str | None = None, after: str | None = None,
                     limit: int = Query(10000, ge=1, le=10000), order: Literal["asc", "desc"] = "desc",
                     owner: str = Depends(current_owner)):
    files = await state(request).bridge.call(state(request).store.list_files, owner)
    if purpose:
        files = [f for f in files if f["purpose"] == purpose]
    if order == "asc":
        files.reverse()
    if after:
        ids = [f["id"] for f in files]
        files = files[ids.index(after) + 1:] if after in ids else []
    page = files[:limit]
    return json_response({"object": "list", "data": [public(f) for f in page],
                          "first_id": page[0]["id"] if page else None,
                          "last_id": page[-1]["id"] if page else None, "has_more": len(files) > limit})


@router.get("/v1/files/{file_id}", responses=errors(404))
async def get_file(file_id: str, request: Request, owner: str = Depends(current_owner)):
    return json_response(public(await owned_file(request, file_id, owner)))


@router.get("/v1/files/{file_id}/content", response_class=Response, responses={
    200: {"description": "The file's bytes", "content": {"application/octet-stream": {
        "schema": {"type": "string", "format": "binary"}}}}, **errors(404)})
async def file_content(file_id: str, request: Request, owner: str = Depends(current_owner)):
    await owned_file(request, file_id, owner)
    content = await state(request).bridge.call(state(request).store.file_content, file_id)
    if content is None:
        raise not_found(f"no file with id {file_id!r}", "file_id")
    return Response(content, media_type="application/octet-stream")


@router.delete("/v1/files/{file_id}", responses=errors(404))
async def delete_file(file_id: str, request: Request, owner: str = Depends(current_owner)):
    st = state(request)
    await owned_file(request, file_id, owner)
    await st.bridge.call(st.store.delete_file, file_id)
    return json_response({"id": file_id, "object": "file", "deleted": True})
