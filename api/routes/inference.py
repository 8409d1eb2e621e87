"""The OpenAI endpoints that answer at once: models, chat, completions,
embeddings, and the translations extension. Each request becomes one job at
interactive priority; the answer is the job's OpenAI body, or its stream."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response, StreamingResponse

from jobs import schemas

from ..bridge import ClientGone
from ..contract import errors, streaming_ok
from ..contract import json_body as json_body_doc
from ..deps import current_owner, json_body, json_response, state
from ..errors import bad_request, from_exception, not_found, unavailable
from ..jobresult import as_record, job_error
from ..sse import KEEPALIVE, ChunkWriter, error_event

router = APIRouter(dependencies=[Depends(current_owner)])

_RUN_ERRORS = errors(400, 404, 409, 413, 429, 503, 504)


def _model_obj(name: str) -> dict:
    return {"id": name, "object": "model", "created": 0, "owned_by": "llamaq"}


@router.get("/v1/models", responses=errors(503))
async def list_models(request: Request):
    models = await state(request).bridge.models()
    return json_response({"object": "list", "data": [_model_obj(m) for m in models]})


@router.get("/v1/models/{model:path}", responses=errors(404, 503))
async def get_model(model: str, request: Request):
    if model not in await state(request).bridge.models():
        raise not_found(f"model {model!r} not found", "model", code="model_not_found")
    return json_response(_model_obj(model))


@router.post("/v1/chat/completions", openapi_extra=json_body_doc(schemas.ChatRequest),
             responses={**streaming_ok("A chat.completion, or its chunks when `stream` is true"), **_RUN_ERRORS})
async def chat(request: Request):
    return await run_job(request, "chat", await json_body(request))


@router.post("/v1/completions", openapi_extra=json_body_doc(schemas.CompletionRequest),
             responses={**streaming_ok("A text_completion, or its chunks when `stream` is true"), **_RUN_ERRORS})
async def completions(request: Request):
    return await run_job(request, "completion", await json_body(request))


@router.post("/v1/embeddings", openapi_extra=json_body_doc(schemas.EmbeddingRequest), responses=_RUN_ERRORS)
async def embeddings(request: Request):
    return await run_job(request, "embedding", await json_body(request))


@router.post("/v1/translations", openapi_extra=json_body_doc(schemas.TranslationRequest), responses=_RUN_ERRORS)
async def translations(request: Request):
    return await run_job(request, "translation", await json_body(request))


async def prepare(request: Request, kind: str, body: dict) -> dict:
    """The body validated, with its model filled in when one is served and checked to be served."""
    st = state(request)
    body = st.validate(kind, body)
    models = await st.bridge.models()
    if not models:
        raise unavailable("no engine or worker is serving any model right now")
    model = body.get("model")
    if not model:
        if len(models) != 1:
            raise bad_request(f"model is required; served: {', '.join(models)}", "model")
        body["model"] = models[0]
    elif model not in models:
        known = getattr(st.backend, "known_models", None)  # models served before, by workers now gone
        if known is not None and model in await st.bridge.call(known):
            raise unavailable(f"no worker is serving model {model!r} right now; served: {', '.join(models)}")
        raise not_found(f"model {model!r} is not served here; served: {', '.join(models)}", "model",
                        code="model_not_found")
    cap = st.config.max_tokens
    if cap and kind != "embedding":  # clamped, as to the context: finish_reason "length"
        body["max_tokens"] = min(body.get("max_tokens") or cap, cap)
    return body


async def run_job(request: Request, kind: str, body: dict) -> Response:
    st = state(request)
    body = await prepare(request, kind, body)
    release = await st.limits.admit_job(current_owner(request), st.bridge, st.backend)
    try:
        stream = bool(body.get("stream")) and kind in ("chat", "completion")
        rec = await st.bridge.call(st.backend.submit, kind, body, priority="interactive", stream=stream)
        if stream:
            response = await _start_stream(request, st, rec.id, kind, body, release)
            release = None  # the stream releases the slot when it ends
            return response
        try:
            rec = await st.bridge.wait(rec.id, request)
        except ClientGone:
            return Response(status_code=499)
        if rec.status != "succeeded":
            raise job_error(rec)
        return json_response(rec.result)
    finally:
        if release is not None:
            release()


async def _start_stream(request: Request, st, job_id: str, kind: str, body: dict, release) -> Response:
    """The SSE response, started once the job's first events are in: a job
    that fails before its first token (a bad grammar, a prompt too long) still
    answers with its HTTP status and error body rather than a 200 stream. A job
    still queued after keepalive_s gets its 200 at once, then `: keep-alive`
    comments until it starts, so proxies and clients do not time out."""
    events = st.bridge.events(job_id)
    nxt = asyncio.ensure_future(events.__anext__())
    try:
        await st.bridge.until_disconnect(asyncio.wait_for(asyncio.shield(nxt), st.config.keepalive_s), request)
    except ClientGone:
        nxt.cancel()
        release()
        await events.aclose()
        st.bridge.pool.submit(st.backend.cancel, job_id)
        return Response(status_code=499)
    except TimeoutError:
        pass  # still queued
    except StopAsyncIteration:
        pass
    if nxt.done():
        first = _first(nxt)
        final = next((as_record(e["record"]) for e in first if "record" in e), None)
        if final is not None and final.status != "succeeded" and not any(e.get("delta") for e in first):
            await events.aclose()
            raise job_error(final)
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    writer = ChunkWriter(kind, job_id, body["model"], include_usage, body.get("n") or 1)
    gen = _stream(st, job_id, writer, nxt, events, release)
    return StreamingResponse(gen, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _first(nxt: asyncio.Future) -> list[dict]:
    try:
        return nxt.result()
    except StopAsyncIteration:
        return []


async def _stream(st, job_id: str, writer: ChunkWriter, nxt: asyncio.Future, events, release):
    finished = False
    final = None
    keepalive = st.config.keepalive_s

    async def batches():
        while not nxt.done():  # queued: comments keep the connection open
            await asyncio.wait({nxt}, timeout=keepalive)
            if not nxt.done():
                yield KEEPALIVE
        first = _first(nxt)
        if first:
            yield first
        async for evs in events:
            yield evs

    try:
        start = writer.start()
        if start:
            yield start
        async for evs in batches():
            if evs is KEEPALIVE:
                yield KEEPALIVE
                continue
            for index, text in _joined_deltas(evs):
                yield writer.delta(text, index)
            for e in evs:
                if "record" in e:
                    final = as_record(e["record"])
        finished = True
        if final is not None and final.status == "succeeded":
            yield writer.finish(final.result)
        else:
            yield error_event(job_error(final).body()["error"] if final is not None else
                              {"message": "the job's stream ended without a result", "type": "server_error",
                               "param": None, "code": "stream_lost"})
    except Exception as e:  # the response has started: an error event is all the client can get now
        finished = True
        st.bridge.pool.submit(st.backend.cancel, job_id)
        mapped = from_exception(e)
        err = mapped.body()["error"] if mapped else {"message": f"{type(e).__name__}: {e}",
                                                     "type": "server_error", "param": None, "code": None}
        yield error_event(err)
    finally:
        release()
        nxt.cancel()
        if not finished:  # client gone (the task is being cancelled: do not await here)
            st.bridge.pool.submit(st.backend.cancel, job_id)


def _joined_deltas(evs: list[dict]) -> list[tuple[int, str]]:
    """Consecutive deltas of the same choice joined: one chunk each."""
    out: list[tuple[int, str]] = []
    for e in evs:
        text = e.get("delta")
        if not text:
            continue
        index = e.get("index", 0)
        if out and out[-1][0] == index:
            out[-1] = (index, out[-1][1] + text)
        else:
            out.append((index, text))
    return out
