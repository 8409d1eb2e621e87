"""Server-sent events in OpenAI's chunk format, built from a job's text deltas
and its final record."""

from __future__ import annotations

import time

import orjson

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"  # an SSE comment: clients skip it


def event(obj: dict) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


class ChunkWriter:
    """Chunks for one streamed chat ("chat") or completion ("completion") job."""

    def __init__(self, kind: str, job_id: str, model: str, include_usage: bool, n: int = 1):
        self.chat = kind == "chat"
        self.n = n  # choices: each opens with its role
        self.id = ("chatcmpl-" if self.chat else "cmpl-") + job_id
        self.object = "chat.completion.chunk" if self.chat else "text_completion"
        self.model = model
        self.created = int(time.time())
        self.include_usage = include_usage

    def _chunk(self, choices: list[dict], **extra) -> bytes:
        obj = {"id": self.id, "object": self.object, "created": self.created, "model": self.model,
               "system_fingerprint": None, "choices": choices}
        if self.include_usage:
            obj["usage"] = None
        obj.update(extra)
        return event(obj)

    def _choice(self, text: str | None, finish_reason: str | None, index: int = 0, role: bool = False) -> dict:
        if self.chat:
            delta: dict = {}
            if role:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish_reason}

    def start(self) -> bytes:
        if not self.chat:
            return b""
        return b"".join(self._chunk([self._choice("", None, i, role=True)]) for i in range(self.n))

    def delta(self, text: str, index: int = 0) -> bytes:
        return self._chunk([self._choice(text, None, index)])

    def finish(self, result: dict | None) -> bytes:
        """A finish_reason chunk per choice, the usage chunk when asked for, then [DONE]."""
        result = result or {}
        out = b""
        for i, choice in enumerate(result.get("choices") or [{}]):
            reason = choice.get("finish_reason") or "stop"
            out += self._chunk([self._choice(None if self.chat else "", reason, choice.get("index", i))])
        if self.include_usage:
            out += self._chunk([], usage=result.get("usage"))
        return out + DONE


def error_event(err: dict) -> bytes:
    return event({"error": err}) + DONE
