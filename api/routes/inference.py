"""The OpenAI endpoints that answer at once: models, chat, completions,
embeddings, and the translations extension. Each request becomes one job at
interactive priority; the answer is the job's OpenAI body, or its stream."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response, StreamingResponse

from ..bridge import ClientGone
from ..deps import current_owner, json_body, json_response, json_schema_body, state
from ..errors import bad_request, from_exception, not_found, unavailable
from ..jobresult import as_record, job_error
from ..sse import ChunkWriter, error_event

router = APIRouter(dependencies=[Depends(current_owner)])

_SAMPLING = {
    "model": {"type": "string"}, "max_tokens": {"type": "integer"}, "temperature": {"type": "number"},
    "top_p": {"type": "number"}, "top_k": {"type": "integer"}, "min_p": {"type": "number"},
    "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    "seed": {"type": "integer"}, "stream": {"type": "boolean"}, "n": {"type": "integer"},
    "presence_penalty": {"type": "number"}, "frequency_penalty": {"type": "number"},
    "repeat_penalty": {"type": "number"}, "logit_bias": {"type": "object"},
    "response_format": {"type": "object"}, "json_schema": {"type": "object"}, "grammar": {"type": "string"},
    "stream_options": {"type": "object"}, "user": {"type": "string"}, "cache_prompt": {"type": "boolean"},
}
_CHAT_SCHEMA = json_schema_body({**_SAMPLING, "max_completion_tokens": {"type": "integer"}, "messages": {
    "type": "array", "items": {"type": "object", "properties": {"role": {"type": "string"},
                                                                 "content": {"type": "string"}}}}},
    ["messages"])
_COMPLETION_SCHEMA = json_schema_body({**_SAMPLING, "prompt": {"oneOf": [
    {"type": "string"}, {"type": "array", "items": {"type": "string"}}]}}, ["prompt"])
_EMBEDDING_SCHEMA = json_schema_body({"model": {"type": "string"}, "input": {"oneOf": [
    {"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    "encoding_format": {"type": "string", "enum": ["float", "base64"]}}, ["input"])
_TRANSLATION_SCHEMA = json_schema_body({"model": {"type": "string"}, "input": {"oneOf": [
    {"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    "target_language": {"type": "string"}, "source_language": {"type": "string"},
    "glossary": {"type": "object", "additionalProperties": {"type": "string"}}}, ["input", "target_language"])


def _model_obj(name: str) -> dict:
    return {"id": name, "object": "model", "created": 0, "owned_by": "llamaq"}


@router.get("/v1/models")
async def list_models(request: Request):
    models = await state(request).bridge.models()
    return json_response({"object": "list", "data": [_model_obj(m) for m in models]})


@router.get("/v1/models/{model:path}")
async def get_model(model: str, request: Request):
    if model not in await state(request).bridge.models():
        raise not_found(f"model {model!r} not found", "model", code="model_not_found")
    return json_response(_model_obj(model))


@router.post("/v1/chat/completions", openapi_extra=_CHAT_SCHEMA)
async def chat(request: Request):
    return await run_job(request, "chat", await json_body(request))


@router.post("/v1/completions", openapi_extra=_COMPLETION_SCHEMA)
async def completions(request: Request):
    return await run_job(request, "completion", await json_body(request))


@router.post("/v1/embeddings", openapi_extra=_EMBEDDING_SCHEMA)
async def embeddings(request: Request):
    return await run_job(request, "embedding", await json_body(request))


@router.post("/v1/translations", openapi_extra=_TRANSLATION_SCHEMA)
async def translations(request: Request):
    return await run_job(request, "translation", await json_body(request))


async def prepare(request: Request, kind: str, body: dict) -> dict:
    """Fill in the model when one is served, check it is served, validate the body."""
    st = state(request)
    models = await st.bridge.models()
    if not models:
        raise unavailable("no engine or worker is serving any model right now")
    model = body.get("model")
    if model is None:
        if len(models) != 1:
            raise bad_request(f"model is required; served: {', '.join(models)}", "model")
        body["model"] = models[0]
    elif isinstance(model, str) and model not in models:
        known = getattr(st.backend, "known_models", None)  # models served before, by workers now gone
        if known is not None and model in await st.bridge.call(known):
            raise unavailable(f"no worker is serving model {model!r} right now; served: {', '.join(models)}")
        raise not_found(f"model {model!r} is not served here; served: {', '.join(models)}", "model",
                        code="model_not_found")
    return st.validate(kind, body)


async def run_job(request: Request, kind: str, body: dict) -> Response:
    st = state(request)
    body = await prepare(request, kind, body)
    stream = bool(body.get("stream")) and kind in ("chat", "completion")
    rec = await st.bridge.call(st.backend.submit, kind, body, priority="interactive", stream=stream)
    if stream:
        return await _start_stream(request, st, rec.id, kind, body)
    try:
        rec = await st.bridge.wait(rec.id, request)
    except ClientGone:
        return Response(status_code=499)
    if rec.status != "succeeded":
        raise job_error(rec)
    return json_response(rec.result)


async def _start_stream(request: Request, st, job_id: str, kind: str, body: dict) -> Response:
    """The SSE response, started once the job's first events are in: a job
    that fails before its first token (a bad grammar, a prompt too long) still
    answers with its HTTP status and error body rather than a 200 stream."""
    events = st.bridge.events(job_id)
    try:
        first = await st.bridge.until_disconnect(events.__anext__(), request)
    except ClientGone:
        await events.aclose()
        st.bridge.pool.submit(st.backend.cancel, job_id)
        return Response(status_code=499)
    except StopAsyncIteration:
        first = []
    final = next((as_record(e["record"]) for e in first if "record" in e), None)
    if final is not None and final.status != "succeeded" and not any(e.get("delta") for e in first):
        await events.aclose()
        raise job_error(final)
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    writer = ChunkWriter(kind, job_id, body["model"], include_usage)
    return StreamingResponse(_stream(st, job_id, writer, first, events), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _stream(st, job_id: str, writer: ChunkWriter, first: list[dict], events):
    finished = False
    final = None

    async def batches():
        if first:
            yield first
        async for evs in events:
            yield evs

    try:
        start = writer.start()
        if start:
            yield start
        async for evs in batches():
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
