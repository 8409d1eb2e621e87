"""How prompts reach a model. A Submitter takes every job of a run at once and
yields completions as they finish:

    submitter.run(jobs) -> Iterator[(index, Completion)]

EngineSubmitter talks to an in-process engine.Engine (embedded mode);
ApiSubmitter sends one OpenAI batch through a llamaq server (/v1/files,
/v1/batches) and polls it."""

from __future__ import annotations

import http.client
import io
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..chat import chat_for
from .prompts import Prompt


@dataclass
class Job:
    prompt: Prompt
    max_tokens: int
    temperature: float = 0.0
    seed: int | None = None  # with temperature > 0: a fresh but reproducible sample


@dataclass
class Completion:
    text: str
    finish_reason: str = "stop"
    completion_tokens: int = 0
    error: str | None = None


class Submitter(Protocol):
    model_id: str  # for the translation-memory key
    has_chat_template: bool
    calls: int  # model requests made so far

    def run(self, jobs: list[Job]) -> Iterator[tuple[int, Completion]]: ...


class EngineSubmitter:
    def __init__(self, engine, poll_s: float = 0.005):
        self.engine = engine
        self.model_id = engine.model_name
        self.chat = chat_for(engine)
        self.has_chat_template = self.chat.has_template
        self.calls = 0
        self.poll_s = poll_s

    def _request(self, job: Job):
        from engine import Request, SamplingParams

        p = job.prompt
        prompt = self.chat.render(p.messages) if p.messages is not None else p.text
        stop = list(p.stop) + (self.chat.stop if p.messages is not None else [])
        return Request(prompt, SamplingParams(temperature=job.temperature, seed=job.seed, max_tokens=job.max_tokens,
                                               stop=stop))

    def run(self, jobs: list[Job]) -> Iterator[tuple[int, Completion]]:
        from engine import EngineError, QueueFull

        pending: dict[int, object] = {}
        queue = list(range(len(jobs)))[::-1]
        try:
            while queue or pending:
                while queue:  # submit everything the engine will take
                    i = queue[-1]
                    try:
                        pending[i] = self.engine.submit(self._request(jobs[i]))
                    except QueueFull:
                        break
                    except EngineError as e:
                        queue.pop()
                        yield i, Completion("", "error", error=str(e))
                        continue
                    queue.pop()
                    self.calls += 1
                done = [i for i, h in pending.items() if h.done]
                if not done:
                    time.sleep(self.poll_s)
                    continue
                for i in done:
                    h = pending.pop(i)
                    try:
                        r = h.result()
                        yield i, Completion(r.text, r.finish_reason, r.usage.completion_tokens)
                    except EngineError as e:
                        yield i, Completion("", "error", error=str(e))
        finally:
            for h in pending.values():  # interrupted: stop what is still decoding
                h.cancel()


class ApiError(RuntimeError):
    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient  # the API is away or its queue is: worth asking again


TRANSIENT_STATUSES = (502, 503, 504)


def ride_out(call: Callable[[], Any], outage_s: float, transient: Callable[[Exception], bool]) -> Any:
    """call(), asked again with a growing pause while it fails transiently (an API
    restart, a Redis outage behind it), for up to outage_s."""
    deadline, wait = time.monotonic() + outage_s, 0.5
    while True:
        try:
            return call()
        except Exception as e:
            if not transient(e) or time.monotonic() + wait > deadline:
                raise
        time.sleep(wait)
        wait = min(5.0, wait * 2)


@dataclass
class ApiSubmitter:
    """Submits one OpenAI batch to a llamaq API server and polls it."""

    base_url: str
    model: str | None = None
    api_key: str | None = None
    poll_s: float = 2.0
    timeout_s: float = 24 * 3600
    # polls ride out an API restart or a Redis outage behind it (no connection, 502/503/504)
    # this long; an upload or a batch creation is not repeated (it would run twice)
    outage_s: float = 300.0
    on_poll: Callable[[dict], None] | None = None
    has_chat_template: bool = True  # the server's chat endpoint renders the model's template
    calls: int = 0
    model_id: str = field(init=False, default="")

    def __post_init__(self):
        self.base_url = self.base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        if not self.model:
            data = self._get("/models").get("data") or []
            if not data:
                raise ApiError(f"{self.base_url}/models lists no model")
            self.model = data[0]["id"]
        self.model_id = self.model

    # -- HTTP --
    def _request(self, method: str, path: str, body: bytes | None = None, ctype: str | None = None) -> bytes:
        req = urllib.request.Request(self.base_url + path, data=body, method=method)
        if ctype:
            req.add_header("Content-Type", ctype)
        if self.api_key:
            req.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:500]
            raise ApiError(f"{method} {self.base_url}{path}: HTTP {e.code}: {detail}",
                           transient=e.code in TRANSIENT_STATUSES) from None
        except (OSError, http.client.HTTPException) as e:  # refused, reset, cut off mid-answer, timed out
            raise ApiError(f"cannot reach {self.base_url}: {getattr(e, 'reason', None) or e!r}", transient=True) from None

    def _json(self, method: str, path: str, payload: dict | None = None) -> dict:
        body = json.dumps(payload).encode() if payload is not None else None
        return json.loads(self._request(method, path, body, "application/json" if body else None))

    def _get(self, path: str, parse=json.loads):
        """A GET repeated through a transient failure, for up to outage_s."""
        return ride_out(lambda: parse(self._request("GET", path)), self.outage_s,
                        lambda e: isinstance(e, ApiError) and e.transient)

    def _upload(self, content: bytes) -> str:
        boundary = uuid.uuid4().hex
        buf = io.BytesIO()
        buf.write(f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'.encode())
        buf.write(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="translate.jsonl"\r\n'
                  "Content-Type: application/jsonl\r\n\r\n".encode())
        buf.write(content + f"\r\n--{boundary}--\r\n".encode())
        return json.loads(self._request("POST", "/files", buf.getvalue(),
                                        f"multipart/form-data; boundary={boundary}"))["id"]

    # -- the batch --
    def _line(self, i: int, job: Job) -> dict:
        p = job.prompt
        body = {"model": self.model, "temperature": job.temperature, "max_tokens": job.max_tokens}
        if job.seed is not None:
            body["seed"] = job.seed
        if p.stop:
            body["stop"] = p.stop[:4]
        if p.messages is not None:
            body["messages"] = p.messages
            url = "/v1/chat/completions"
        else:
            body["prompt"] = p.text
            url = "/v1/completions"
        return {"custom_id": str(i), "method": "POST", "url": url, "body": body}

    def run(self, jobs: list[Job]) -> Iterator[tuple[int, Completion]]:
        if not jobs:
            return
        lines = [self._line(i, j) for i, j in enumerate(jobs)]
        endpoints = {ln["url"] for ln in lines}
        if len(endpoints) != 1:
            raise ApiError("one batch must use one endpoint")
        file_id = self._upload("\n".join(json.dumps(ln, ensure_ascii=False) for ln in lines).encode() + b"\n")
        batch = self._json("POST", "/batches", {"input_file_id": file_id, "endpoint": endpoints.pop(),
                                                "completion_window": "24h",
                                                "metadata": {"llamaq": "translate"}})
        self.calls += len(jobs)
        deadline = time.monotonic() + self.timeout_s
        wait = 0.05  # quick answers for small batches, then back off to poll_s
        try:
            while batch.get("status") not in ("completed", "failed", "expired", "cancelled"):
                if time.monotonic() > deadline:
                    raise ApiError(f"batch {batch['id']} not finished after {self.timeout_s}s")
                time.sleep(wait)
                wait = min(self.poll_s, wait * 1.5)
                batch = self._get(f"/batches/{batch['id']}")
                if self.on_poll:
                    self.on_poll(batch)
        except BaseException as e:
            try:
                self._json("POST", f"/batches/{batch['id']}/cancel")
            except ApiError:
                pass
            if isinstance(e, ApiError):
                raise ApiError(f"batch {batch['id']}: {e}") from None
            raise
        seen: set[int] = set()
        for fid in (batch.get("output_file_id"), batch.get("error_file_id")):
            if not fid:
                continue
            for raw in self._get(f"/files/{fid}/content", bytes.decode).splitlines():
                if raw.strip():
                    i, c = _parse_result(json.loads(raw))
                    seen.add(i)
                    yield i, c
        for i in range(len(jobs)):
            if i not in seen:
                yield i, Completion("", "error", error=f"batch {batch['id']} {batch.get('status')}: no result")


def _parse_result(line: dict) -> tuple[int, Completion]:
    i = int(line["custom_id"])
    resp = line.get("response") or {}
    body = resp.get("body") or {}
    if line.get("error") or resp.get("status_code", 200) >= 400 or not body.get("choices"):
        err = line.get("error") or body.get("error") or {"message": f"HTTP {resp.get('status_code')}"}
        return i, Completion("", "error", error=str(err.get("message", err)) if isinstance(err, dict) else str(err))
    ch = body["choices"][0]
    text = ch["message"]["content"] if "message" in ch else ch.get("text", "")
    usage = body.get("usage") or {}
    return i, Completion(text or "", ch.get("finish_reason") or "stop", usage.get("completion_tokens", 0))
