"""OpenAI Files: upload (multipart), list, get, content, delete. A file is
visible only to the API key that uploaded it (and its batches' outputs)."""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from starlette.responses import Response

from ..deps import current_owner, json_response, state
from ..errors import APIError, bad_request, not_found, too_large
from ..ids import new_id

router = APIRouter()

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
_CHUNK = 1 << 20


def public(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k != "owner"}


def owned_file(request: Request, file_id: str, owner: str) -> dict:
    meta = state(request).store.get_file(file_id)
    if meta is None or meta.get("owner", "") != owner:
        raise not_found(f"no file with id {file_id!r}", "file_id")
    return meta


@router.post("/v1/files")
async def upload(request: Request, file: UploadFile = File(...), purpose: str = Form(...),
                 owner: str = Depends(current_owner)):
    if purpose not in PURPOSES:
        raise bad_request(f"purpose must be one of {', '.join(PURPOSES)}, not {purpose!r}", "purpose")
    limits = state(request).batch_limits
    content = bytearray()
    while chunk := await file.read(_CHUNK):
        content += chunk
        if len(content) > limits.max_bytes:
            raise APIError(413, f"the file is over the limit of {limits.max_bytes} bytes "
                                f"({limits.max_bytes // (1024 * 1024)} MB)", param="file", code="file_too_large")
    content = bytes(content)
    if purpose == "batch":
        _check_batch_file(content, limits.max_lines)
    meta = {"id": new_id("file-"), "object": "file", "bytes": len(content), "created_at": int(time.time()),
            "filename": file.filename or "upload.jsonl", "purpose": purpose, "status": "processed",
            "expires_at": None, "status_details": None, "owner": owner}
    await state(request).bridge.call(state(request).store.put_file, meta, content)
    return json_response(public(meta))


def _check_batch_file(content: bytes, max_lines: int) -> None:
    if content.count(b"\n") >= max_lines:  # cheap bound first; count non-blank lines only if near it
        n = sum(1 for line in content.split(b"\n") if line.strip())
        if n > max_lines:
            raise too_large(f"the batch file has {n} requests; a batch holds at most {max_lines}", "file")
    if not content.strip():
        raise bad_request("the batch file is empty", "file")


@router.get("/v1/files")
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


@router.get("/v1/files/{file_id}")
async def get_file(file_id: str, request: Request, owner: str = Depends(current_owner)):
    return json_response(public(owned_file(request, file_id, owner)))


@router.get("/v1/files/{file_id}/content")
async def file_content(file_id: str, request: Request, owner: str = Depends(current_owner)):
    owned_file(request, file_id, owner)
    content = await state(request).bridge.call(state(request).store.file_content, file_id)
    if content is None:
        raise not_found(f"no file with id {file_id!r}", "file_id")
    return Response(content, media_type="application/octet-stream")


@router.delete("/v1/files/{file_id}")
async def delete_file(file_id: str, request: Request, owner: str = Depends(current_owner)):
    owned_file(request, file_id, owner)
    state(request).store.delete_file(file_id)
    return json_response({"id": file_id, "object": "file", "deleted": True})
