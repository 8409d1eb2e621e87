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

from .errors import JobValidationError
from .record import KINDS
from .validate import (
    logit_bias,
    opt_bool,
    opt_dict,
    opt_int,
    opt_number,
    opt_str,
    require,
    stop_list,
    str_or_str_list,
)

OnDelta = Callable[[str, int], None]

# OpenAI leaves max_tokens unbounded; the engine reserves KV room for prompt +
# max_tokens per request, so an unbounded default would let one request hold
# the whole context. This is the default when a body gives none.
DEFAULT_MAX_TOKENS = 512
_ROLES = ("system", "developer", "user", "assistant", "tool")

# ------------------------------------------------------------------ validation


def _sampling_fields(body: dict) -> dict:
    out: dict[str, Any] = {}
    out["max_tokens"] = opt_int(body, "max_tokens", lo=1)
    mct = opt_int(body, "max_completion_tokens", lo=1)
    if mct is not None:
        out["max_tokens"] = mct
    out["temperature"] = opt_number(body, "temperature", 0, 2)
    out["top_p"] = opt_number(body, "top_p", 0, 1)
    if out["top_p"] == 0:
        raise JobValidationError("'top_p' must be greater than 0", "top_p")
    out["top_k"] = opt_int(body, "top_k", lo=0)
    out["min_p"] = opt_number(body, "min_p", 0, 1)
    out["repeat_penalty"] = opt_number(body, "repeat_penalty", 0, 10)
    if out["repeat_penalty"] == 0:
        raise JobValidationError("'repeat_penalty' must be greater than 0", "repeat_penalty")
    out["presence_penalty"] = opt_number(body, "presence_penalty", -2, 2)
    out["frequency_penalty"] = opt_number(body, "frequency_penalty", -2, 2)
    out["seed"] = opt_int(body, "seed")
    out["stop"] = stop_list(body)
    out["logit_bias"] = logit_bias(body)
    n = opt_int(body, "n", lo=1)
    if n not in (None, 1):
        raise JobValidationError("only n=1 is supported", "n")
    if body.get("logprobs") not in (None, False, 0):
        raise JobValidationError("logprobs are not supported", "logprobs")
    if body.get("top_logprobs") not in (None, 0):
        raise JobValidationError("top_logprobs are not supported", "top_logprobs")
    out["cache_prompt"] = opt_bool(body, "cache_prompt")
    out["stream"] = opt_bool(body, "stream")
    so = opt_dict(body, "stream_options")
    if so is not None:
        out["stream_options"] = {"include_usage": opt_bool(so, "include_usage") or False}
    out["model"] = opt_str(body, "model")
    out.update(_constraint_fields(body))
    return {k: v for k, v in out.items() if v is not None}


def _constraint_fields(body: dict) -> dict:
    """response_format / json_schema / grammar: at most one constraint."""
    out: dict[str, Any] = {}
    chosen = []
    rf = opt_dict(body, "response_format")
    if rf is not None:
        t = rf.get("type")
        if t == "json_object":
            out["response_format"] = {"type": "json_object"}
            chosen.append("response_format")
        elif t == "json_schema":
            js = rf.get("json_schema")
            if not isinstance(js, dict):
                raise JobValidationError("'response_format.json_schema' must be an object",
                                         "response_format.json_schema")
            schema = js.get("schema", {})
            if not isinstance(schema, (dict, bool)):
                raise JobValidationError("'response_format.json_schema.schema' must be an object",
                                         "response_format.json_schema.schema")
            name = opt_str(js, "name")
            strict = js.get("strict")
            if strict is not None and not isinstance(strict, bool):
                raise JobValidationError("'response_format.json_schema.strict' must be a boolean",
                                         "response_format.json_schema.strict")
            out["response_format"] = {"type": "json_schema",
                                      "json_schema": {"name": name, "schema": schema, "strict": strict}}
            chosen.append("response_format")
        elif t != "text":
            raise JobValidationError("'response_format.type' must be 'text', 'json_object' or 'json_schema'",
                                     "response_format.type")
    if body.get("json_schema") is not None:
        if not isinstance(body["json_schema"], (dict, bool)):
            raise JobValidationError("'json_schema' must be an object", "json_schema")
        out["json_schema"] = body["json_schema"]
        chosen.append("json_schema")
    grammar = opt_str(body, "grammar")
    if grammar:
        out["grammar"] = grammar
        chosen.append("grammar")
    if len(chosen) > 1:
        raise JobValidationError(
            f"give only one of response_format (json), json_schema and grammar; got {' and '.join(chosen)}",
            chosen[-1])
    return out


def _messages(body: dict) -> list[dict]:
    msgs = require(body, "messages")
    if not isinstance(msgs, list) or not msgs:
        raise JobValidationError("'messages' must be a non-empty list", "messages")
    out = []
    for i, m in enumerate(msgs):
        p = f"messages.{i}"
        if not isinstance(m, dict):
            raise JobValidationError(f"'{p}' must be an object", p)
        role = m.get("role")
        if role not in _ROLES:
            raise JobValidationError(f"'{p}.role' must be one of {', '.join(_ROLES)}", f"{p}.role")
        content = m.get("content")
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise JobValidationError("only text content parts are supported", f"{p}.content.{j}")
                texts.append(part["text"])
            content = "".join(texts)
        elif content is not None and not isinstance(content, str):
            raise JobValidationError(f"'{p}.content' must be a string or a list of text parts", f"{p}.content")
        out.append({"role": role, "content": content or ""})
    return out


def _validate_chat(body: dict) -> dict:
    out = {"messages": _messages(body)}
    if body.get("tools"):
        raise JobValidationError("tools are not supported", "tools")
    out.update(_sampling_fields(body))
    return out


def _validate_completion(body: dict) -> dict:
    out = {"prompt": str_or_str_list(body, "prompt", allow_tokens=True)}
    if out["prompt"] == "":
        raise JobValidationError("'prompt' must not be empty", "prompt")
    if isinstance(out["prompt"], list) and any(p == "" for p in out["prompt"]):
        raise JobValidationError("'prompt' must not contain empty strings", "prompt")
    if opt_int(body, "best_of", lo=1) not in (None, 1):
        raise JobValidationError("only best_of=1 is supported", "best_of")
    if opt_str(body, "suffix"):
        raise JobValidationError("suffix is not supported", "suffix")
    echo = opt_bool(body, "echo")
    if echo:
        out["echo"] = True
    out.update(_sampling_fields(body))
    return out


def _validate_embedding(body: dict) -> dict:
    inp = str_or_str_list(body, "input", allow_tokens=True)
    if inp == "" or (isinstance(inp, list) and any(s == "" for s in inp)):
        raise JobValidationError("'input' must not contain empty strings", "input")
    out: dict[str, Any] = {"input": inp}
    fmt = opt_str(body, "encoding_format")
    if fmt not in (None, "float", "base64"):
        raise JobValidationError("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    if fmt:
        out["encoding_format"] = fmt
    dims = opt_int(body, "dimensions", lo=1)
    if dims is not None:
        out["dimensions"] = dims
    model = opt_str(body, "model")
    if model:
        out["model"] = model
    return out


def _validate_translation(body: dict) -> dict:
    inp = str_or_str_list(body, "input")
    out: dict[str, Any] = {"input": inp}
    target = opt_str(body, "target_language", nonempty=True)
    if target is None:
        raise JobValidationError("'target_language' is required", "target_language")
    out["target_language"] = target
    src = opt_str(body, "source_language")
    if src:
        out["source_language"] = src
    g = body.get("glossary")
    if g is not None:
        if not isinstance(g, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in g.items()):
            raise JobValidationError("'glossary' must be an object mapping terms to their translations", "glossary")
        out["glossary"] = g
    for k in ("model",):
        v = opt_str(body, k)
        if v:
            out[k] = v
    out["max_tokens"] = opt_int(body, "max_tokens", lo=1)
    out["temperature"] = opt_number(body, "temperature", 0, 2)
    out["seed"] = opt_int(body, "seed")
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
    return _VALIDATORS[kind](body)


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


def _params(body: dict, extra_stop: list[str] = (), **defaults) -> SamplingParams:
    p = SamplingParams(max_tokens=DEFAULT_MAX_TOKENS)
    for k, v in defaults.items():
        setattr(p, k, v)
    for k in ("max_tokens", "temperature", "top_p", "top_k", "min_p", "repeat_penalty",
              "presence_penalty", "frequency_penalty", "seed"):
        if body.get(k) is not None:
            setattr(p, k, body[k])
    p.stop = list(body.get("stop") or []) + [s for s in extra_stop if s not in (body.get("stop") or [])]
    if body.get("logit_bias"):
        p.logit_bias = {int(k): v for k, v in body["logit_bias"].items()}
    p.constraint = _constraint(body)
    return p


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


def _submit_all(engine, requests: list[Request], priority: int = 0) -> list:
    handles = []
    try:
        for r in requests:
            r.priority = priority
            handles.append(engine.submit(r))
    except BaseException:
        for h in handles:
            h.cancel()
        raise
    return handles


def _usage(results: list) -> dict:
    pt = sum(r.usage.prompt_tokens for r in results)
    ct = sum(r.usage.completion_tokens for r in results)
    cached = sum(r.usage.cached_tokens for r in results)
    return {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct,
            "prompt_tokens_details": {"cached_tokens": cached}}


def _finish_reason(r) -> str:
    if r.finish_reason == "stop" and r.incomplete:
        return "length"
    return r.finish_reason


def _model(engine, body: dict) -> str:
    return engine.model_name


def _start_chat(engine, body: dict, on_delta: OnDelta | None, priority: int = 0) -> Pending:
    prompt = engine.render_chat(body["messages"])
    req = Request(prompt, _params(body, engine.chat_stop), cache_prompt=body.get("cache_prompt", True))
    created, model = int(time.time()), _model(engine, body)

    def build(results: list) -> dict:
        r = results[0]
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": created,
            "model": model, "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": r.text},
                         "logprobs": None, "finish_reason": _finish_reason(r)}],
            "usage": _usage(results),
        }

    return Pending(_submit_all(engine, [req], priority), build, on_delta)


def _start_completion(engine, body: dict, on_delta: OnDelta | None, priority: int = 0) -> Pending:
    prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
    reqs = [Request(p, _params(body), cache_prompt=body.get("cache_prompt", True)) for p in prompts]
    created, model, echo = int(time.time()), _model(engine, body), body.get("echo", False)

    def build(results: list) -> dict:
        choices = []
        for i, (p, r) in enumerate(zip(prompts, results)):
            text = r.text
            if echo:
                text = (p if isinstance(p, str) else engine.detokenize(p)) + text
            choices.append({"text": text, "index": i, "logprobs": None, "finish_reason": _finish_reason(r)})
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": created,
                "model": model, "system_fingerprint": None, "choices": choices, "usage": _usage(results)}

    return Pending(_submit_all(engine, reqs, priority), build, on_delta)


def _start_embedding(engine, body: dict) -> Pending:
    inp = body["input"]
    texts = [inp] if isinstance(inp, str) else [t if isinstance(t, str) else engine.detokenize(t) for t in inp]
    vectors = engine.embed(texts)
    dims = body.get("dimensions")
    if dims is not None and vectors and dims != len(vectors[0]):
        raise JobValidationError(
            f"this model's embeddings have {len(vectors[0])} dimensions; 'dimensions' cannot change that",
            "dimensions")
    n_tokens = sum(len(engine.tokenize(t)) for t in texts)
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
    return engine.render_chat([{"role": "user", "content": "\n".join(lines)}])


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
        params = _params(dict(body, max_tokens=body.get("max_tokens") or budget_for(text)), engine.chat_stop,
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

    return Pending(_submit_all(engine, reqs, priority), build, on_delta)


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
