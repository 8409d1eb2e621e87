"""Job kinds: OpenAI request bodies in, OpenAI response bodies out.

    validate(kind, body) -> normalised body        (raises JobValidationError)
    start(engine, kind, body, on_delta=None) -> Pending   (submits; does not wait)
    run(engine, kind, body, on_delta=None) -> dict       (start(...).result())

on_delta(text, index) receives generated text as it is decoded; index is the
choice (completion with several prompts) or the input (translation) it belongs to.
Unknown body fields are dropped; a wrong type or value raises naming the field.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable
from typing import Any

from engine import Constraint, Request, SamplingParams
from engine.errors import PromptTooLong

from . import schemas
from .chat import chat_for
from .errors import JobValidationError
from .record import KINDS

OnDelta = Callable[[str, int], None]

# OpenAI leaves max_tokens unbounded; the engine reserves KV room for prompt +
# max_tokens per request, so an unbounded default would let one request hold
# the whole context. This is the default when a body gives none.
DEFAULT_MAX_TOKENS = 512

# ------------------------------------------------------------------ validation
# The checks are jobs.schemas' models (also the API's published schemas); these
# functions only normalise what they accepted.

_SAMPLING_KEYS = ("model", "max_tokens", "temperature", "top_p", "top_k", "min_p", "repeat_penalty",
                  "presence_penalty", "frequency_penalty", "seed", "cache_prompt", "stream", "n")


def _sampling_fields(req: schemas.Sampling) -> dict:
    out: dict[str, Any] = {k: getattr(req, k) for k in _SAMPLING_KEYS}
    if isinstance(req, schemas.ChatRequest) and req.max_completion_tokens is not None:  # elsewhere an ignored extra
        out["max_tokens"] = req.max_completion_tokens
    if req.stop is not None:
        out["stop"] = [s for s in ([req.stop] if isinstance(req.stop, str) else req.stop) if s]
    if req.logit_bias is not None:
        out["logit_bias"] = {k: float(v) for k, v in req.logit_bias.items()}
    if req.stream_options is not None:
        out["stream_options"] = {"include_usage": bool(req.stream_options.include_usage)}
    rf = req.response_format
    if isinstance(rf, schemas.JsonObjectFormat):
        out["response_format"] = {"type": "json_object"}
    elif isinstance(rf, schemas.JsonSchemaFormat):
        js = rf.json_schema
        out["response_format"] = {"type": "json_schema",
                                  "json_schema": {"name": js.name, "schema": js.schema_, "strict": js.strict}}
    out["json_schema"] = req.json_schema
    out["grammar"] = req.grammar or None
    return {k: v for k, v in out.items() if v is not None}


def _content(m: schemas.Message) -> str:
    if isinstance(m.content, list):
        return "".join(part.text for part in m.content)
    return m.content or ""


def _validate_chat(req: schemas.ChatRequest) -> dict:
    return {"messages": [{"role": m.role, "content": _content(m)} for m in req.messages], **_sampling_fields(req)}


def _texts_or_tokens(v: str | list) -> str | list:
    """Token ids alone become a list of one token list, as OpenAI reads them."""
    return [v] if isinstance(v, list) and isinstance(v[0], int) else v


def _validate_completion(req: schemas.CompletionRequest) -> dict:
    out = {"prompt": _texts_or_tokens(req.prompt)}
    if req.echo:
        out["echo"] = True
    return {**out, **_sampling_fields(req)}


def _validate_embedding(req: schemas.EmbeddingRequest) -> dict:
    out = {"input": req.input, "encoding_format": req.encoding_format, "dimensions": req.dimensions,
           "model": req.model or None}
    return {k: v for k, v in out.items() if v is not None}


def _validate_translation(req: schemas.TranslationRequest) -> dict:
    out = {"input": req.input, "target_language": req.target_language, "source_language": req.source_language or None,
           "glossary": req.glossary, "model": req.model or None, "max_tokens": req.max_tokens,
           "temperature": req.temperature, "seed": req.seed}
    return {k: v for k, v in out.items() if v is not None}


_VALIDATORS = {
    "chat": _validate_chat,
    "completion": _validate_completion,
    "embedding": _validate_embedding,
    "translation": _validate_translation,
}


def validate(kind: str, body: Any) -> dict:
    """Check an OpenAI request body for `kind`; return it normalised (known
    fields only, content parts joined, max_completion_tokens -> max_tokens)."""
    if kind not in _VALIDATORS:
        raise JobValidationError(f"unknown job kind {kind!r}; one of {', '.join(KINDS)}", "kind")
    if not isinstance(body, dict):
        raise JobValidationError("the request body must be a JSON object", None)
    return _VALIDATORS[kind](schemas.parse(kind, body))


# ------------------------------------------------------------------ running


def _constraint(body: dict) -> Constraint | None:
    rf = body.get("response_format")
    if rf and rf["type"] == "json_object":
        return Constraint("json_object")
    if rf and rf["type"] == "json_schema":
        return Constraint("json_schema", rf["json_schema"]["schema"])
    if body.get("json_schema") is not None:
        return Constraint("json_schema", body["json_schema"])
    if body.get("grammar"):
        return Constraint("gbnf", body["grammar"])
    return None


def _params(body: dict, n_vocab: int, extra_stop: list[str] = (), **defaults) -> SamplingParams:
    p = SamplingParams(max_tokens=DEFAULT_MAX_TOKENS)
    for k, v in defaults.items():
        setattr(p, k, v)
    for k in ("max_tokens", "temperature", "top_p", "top_k", "min_p", "repeat_penalty",
              "presence_penalty", "frequency_penalty", "seed"):
        if body.get(k) is not None:
            setattr(p, k, body[k])
    p.stop = list(body.get("stop") or []) + [s for s in extra_stop if s not in (body.get("stop") or [])]
    if body.get("logit_bias"):  # ids outside this model's vocabulary are ignored, as the schema says
        p.logit_bias = {int(k): v for k, v in body["logit_bias"].items() if int(k) < n_vocab}
    p.constraint = _constraint(body)
    return p


def _choice_params(body: dict, n_vocab: int, extra_stop: list[str] = ()) -> list[SamplingParams]:
    """One SamplingParams per choice (`n`); a seed given is seed + j for choice j, so the choices differ."""
    out = [_params(body, n_vocab, extra_stop) for _ in range(body.get("n", 1))]
    for j, p in enumerate(out):
        if p.seed is not None:
            p.seed += j
    return out


class Pending:
    """A started job: result() waits for its OpenAI body; cancel() stops it."""

    def __init__(self, handles: list, build: Callable[[list], dict], on_delta: OnDelta | None = None,
                 body: dict | None = None):
        self.handles = handles
        self._build = build
        self._on_delta = on_delta
        self._body = body  # already computed (embeddings)
        self.cancel_requested = False
        self.cancelled = False  # set by result(): some request ended cancelled

    def cancel(self) -> None:
        self.cancel_requested = True
        for h in self.handles:
            h.cancel()

    def result(self, timeout: float | None = None) -> dict:
        if self._body is not None:
            return self._body
        try:
            if self._on_delta:
                for i, h in enumerate(self.handles):
                    for d in h:
                        self._on_delta(d, i)
            results = [h.result(timeout) for h in self.handles]
        except BaseException:
            self.cancel()
            raise
        self.cancelled = any(r.finish_reason == "cancelled" for r in results)
        return self._build(results)


def _submit_all(engine, requests: list[Request], priority: int = 0, field: str = "prompt") -> list:
    """field: the body field the prompts came from, named by a PromptTooLong (the engine says "prompt")."""
    handles = []
    try:
        for r in requests:
            r.priority = priority
            handles.append(engine.submit(r))
    except BaseException as e:
        for h in handles:
            h.cancel()
        if isinstance(e, PromptTooLong):
            e.param = field
        raise
    return handles


def _usage(results: list, n: int = 1) -> dict:
    """n: choices per prompt (results in groups of n); each prompt's tokens count once, as OpenAI counts them."""
    pt = sum(r.usage.prompt_tokens for r in results[::n])
    ct = sum(r.usage.completion_tokens for r in results)
    cached = sum(r.usage.cached_tokens for r in results[::n])
    return {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct,
            "prompt_tokens_details": {"cached_tokens": cached}}


def _finish_reason(r) -> str:
    if r.finish_reason == "stop" and r.incomplete:
        return "length"
    return r.finish_reason


def _model(engine, body: dict) -> str:
    return engine.model_name


def _start_chat(engine, body: dict, on_delta: OnDelta | None, priority: int = 0) -> Pending:
    chat = chat_for(engine)
    prompt = chat.render(body["messages"])
    reqs = [Request(prompt, p, cache_prompt=body.get("cache_prompt", True))
            for p in _choice_params(body, engine.model.n_vocab, chat.stop)]
    created, model = int(time.time()), _model(engine, body)

    def build(results: list) -> dict:
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": created,
            "model": model, "system_fingerprint": None,
            "choices": [{"index": i, "message": {"role": "assistant", "content": r.text},
                         "logprobs": None, "finish_reason": _finish_reason(r)} for i, r in enumerate(results)],
            "usage": _usage(results, len(results)),
        }

    return Pending(_submit_all(engine, reqs, priority, "messages"), build, on_delta)


def _start_completion(engine, body: dict, on_delta: OnDelta | None, priority: int = 0) -> Pending:
    prompts, reqs = [], []
    for p in body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]:
        for params in _choice_params(body, engine.model.n_vocab):  # choice i*n+j: prompt i's j-th, as OpenAI's
            prompts.append(p)
            reqs.append(Request(p, params, cache_prompt=body.get("cache_prompt", True)))
    created, model, echo = int(time.time()), _model(engine, body), body.get("echo", False)

    def build(results: list) -> dict:
        choices = []
        for i, (p, r) in enumerate(zip(prompts, results)):
            text = r.text
            if echo:
                text = (p if isinstance(p, str) else engine.detokenize(p)) + text
            choices.append({"text": text, "index": i, "logprobs": None, "finish_reason": _finish_reason(r)})
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": created,
                "model": model, "system_fingerprint": None, "choices": choices,
                "usage": _usage(results, body.get("n", 1))}

    return Pending(_submit_all(engine, reqs, priority), build, on_delta)


def _start_embedding(engine, body: dict) -> Pending:
    inp = body["input"]
    texts = [inp] if isinstance(inp, str) or isinstance(inp[0], int) else inp
    for t in texts:
        if isinstance(t, list) and not all(0 <= i < engine.model.n_vocab for i in t):
            raise JobValidationError(f"token ids must be in 0..{engine.model.n_vocab - 1}", "input")
    try:
        vectors = engine.embed(texts)
    except PromptTooLong as e:
        e.param = "input"
        raise
    dims = body.get("dimensions")
    if dims is not None and vectors and dims < len(vectors[0]):
        vectors = [_shortened(v, dims) for v in vectors]
    n_tokens = sum(len(t) if isinstance(t, list) else len(engine.tokenize(t)) for t in texts)
    b64 = body.get("encoding_format") == "base64"
    data = []
    for i, v in enumerate(vectors):
        if b64:
            import numpy as np

            emb: Any = base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode()
        else:
            emb = list(v)
        data.append({"object": "embedding", "index": i, "embedding": emb})
    out = {"object": "list", "data": data, "model": _model(engine, body),
           "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}}
    return Pending([], lambda _: out, body=out)


def _shortened(vector, dims: int) -> list[float]:
    """The first dims components, renormalised (OpenAI's `dimensions`)."""
    head = list(vector[:dims])
    norm = sum(x * x for x in head) ** 0.5
    return [x / norm for x in head] if norm else head


def _translation_helpers():
    """The translation engineer's prompt builder, output cleanup and token budget
    (jobs/translation), or plain stand-ins when that package is not there."""
    try:
        from jobs.translation import build_prompt
        from jobs.translation.hygiene import clean
        from jobs.translation.languages import name
        from jobs.translation.pipeline import max_tokens_for
    except ImportError:
        return None
    return build_prompt, clean, name, max_tokens_for


def _simple_prompt(engine, text: str, *, target_language: str, source_language: str | None = None,
                   glossary: dict | None = None) -> str:
    src = f" from {source_language}" if source_language else ""
    lines = [f"Translate the following text{src} into {target_language}.",
             "Reply with the translation only, keeping the formatting."]
    if glossary:
        lines.append("Use these translations for these terms:")
        lines += [f"- {k}: {v}" for k, v in glossary.items()]
    lines += ["", text]
    return chat_for(engine).render([{"role": "user", "content": "\n".join(lines)}])


def _start_translation(engine, body: dict, on_delta: OnDelta | None, priority: int = 0) -> Pending:
    inputs = [body["input"]] if isinstance(body["input"], str) else body["input"]
    helpers = _translation_helpers()
    build_prompt, clean, lang_name, budget_for = helpers or (
        _simple_prompt, lambda out, src, tgt: out.strip(), lambda c: c, lambda t: 2 * len(t) // 3 + 32)
    tgt = body["target_language"]
    reqs = []
    for text in inputs:
        prompt = build_prompt(engine, text, target_language=tgt, source_language=body.get("source_language"),
                              glossary=body.get("glossary"))
        params = _params(dict(body, max_tokens=body.get("max_tokens") or budget_for(text)), engine.model.n_vocab,
                         chat_for(engine).stop,
                         temperature=0.0)
        reqs.append(Request(prompt, params))
    created, model = int(time.time()), _model(engine, body)

    def build(results: list) -> dict:
        data = [{"object": "translation", "index": i, "text": clean(r.text, src, lang_name(tgt)),
                 "finish_reason": _finish_reason(r)}
                for i, (src, r) in enumerate(zip(inputs, results))]
        return {"id": f"trans-{uuid.uuid4().hex}", "object": "list", "created": created, "model": model,
                "target_language": tgt, "source_language": body.get("source_language"),
                "data": data, "usage": _usage(results)}

    return Pending(_submit_all(engine, reqs, priority, "input"), build, on_delta)


def start(engine, kind: str, body: dict, on_delta: OnDelta | None = None, priority: int = 0) -> Pending:
    """Submit a validated job body to the engine; return without waiting.
    priority: the engine's (0 interactive, 1 batch; smaller starts first)."""
    if kind == "chat":
        return _start_chat(engine, body, on_delta, priority)
    if kind == "completion":
        return _start_completion(engine, body, on_delta, priority)
    if kind == "embedding":
        return _start_embedding(engine, body)
    if kind == "translation":
        return _start_translation(engine, body, on_delta, priority)
    raise JobValidationError(f"unknown job kind {kind!r}", "kind")


def run(engine, kind: str, body: dict, on_delta: OnDelta | None = None) -> dict:
    """Validate, run on the engine and wait: the OpenAI response body."""
    return start(engine, kind, validate(kind, body), on_delta).result()
