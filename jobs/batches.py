"""The OpenAI Batch state machine, beside the job records.

    validating -> in_progress -> finalizing -> completed
                             \\-> expired (completion_window) / cancelled / failed

Progress is a property of the stored records, not of a thread: any process
calls advance(batch_id) (the API's periodic sweep does, for every open batch)
and it moves the batch on from whatever state it finds. Each step is
idempotent:
  - a line's job id is derived from (batch id, line index), and creating a job
    that exists does nothing, so a submission cut off by a crash is repeated
    from the start without queuing any line twice; the job record keeps the
    line's custom_id, so an output line is always paired with its own;
  - the output files have ids derived from the batch id, written whole and
    then renamed into place, so a finalization cut off is written again.
At most one runner acts on a batch: it holds a lease, and every write of the
batch record is fenced by it (refused once the lease went to another runner,
which then stops the runner). A Redis error leaves the batch as it is for the
next sweep: only a definite fault (no input file, too many lines) fails one.
Input and output stream through the store in chunks: a batch holds no lines in
memory between steps.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import count

import orjson

from .errors import ModelNotFound
from .record import TERMINAL

log = logging.getLogger("llamaq.batches")

ENDPOINT_KINDS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completion",
    "/v1/embeddings": "embedding",
    "/v1/translations": "translation",
}
COMPLETION_WINDOWS = {"24h": 24 * 3600}
FINAL_BATCH_STATES = ("completed", "failed", "expired", "cancelled")
READ_CHUNK = 500  # job records read per round trip while finalizing


def _env(name: str, default: float):
    return field(default_factory=lambda: type(default)(os.environ.get(name) or default))


@dataclass
class BatchLimits:
    max_lines: int = 50_000
    max_bytes: int = 200 * 1024 * 1024
    submit_chunk: int = _env("LLAMAQ_BATCH_SUBMIT_CHUNK", 2000)  # lines per submit_many call (and lease renewal)
    poll_s: float = _env("LLAMAQ_BATCH_POLL_S", 1.0)  # how often an API process sweeps the open batches
    lease_s: float = _env("LLAMAQ_BATCH_LEASE_S", 30.0)  # a runner that stops renewing loses the batch after this


class LeaseLost(Exception):
    """Another runner took the batch over: this one stops."""


def line_job_id(batch_id: str, index: int) -> str:
    return "job_" + hashlib.blake2b(f"{batch_id}:{index}".encode(), digest_size=12).hexdigest()


def output_file_id(batch_id: str, suffix: str) -> str:
    return "file-" + hashlib.blake2b(f"{batch_id}:{suffix}".encode(), digest_size=12).hexdigest()


# ---------------------------------------------------------------- input lines


def parse_line(n: int, raw: bytes, endpoint: str, default_model: str | None, validate,
               seen: set[str]) -> tuple[str | None, dict | None, dict | None]:
    """(custom_id, validated body, None) or (custom_id, None, error) for line n."""

    def bad(code: str, message: str, cid=None):
        return cid, None, {"code": code, "message": f"line {n}: {message}", "line": n,
                           "type": "invalid_request_error", "param": None}

    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        return bad("invalid_json", f"not valid JSON ({e})")
    if not isinstance(obj, dict):
        return bad("invalid_request", "each line must be a JSON object")
    cid = obj.get("custom_id")
    if not isinstance(cid, str) or not cid:
        return bad("missing_custom_id", "custom_id must be a non-empty string", cid if isinstance(cid, str) else None)
    if cid in seen:
        return bad("duplicate_custom_id", f"custom_id {cid!r} appears more than once", cid)
    seen.add(cid)
    method = obj.get("method", "POST")
    if not isinstance(method, str) or method.upper() != "POST":
        return bad("invalid_method", "method must be POST", cid)
    if obj.get("url") != endpoint:
        return bad("mismatched_url", f"url {obj.get('url')!r} is not the batch's endpoint {endpoint}", cid)
    body = obj.get("body")
    if not isinstance(body, dict):
        return bad("invalid_body", "body must be a JSON object", cid)
    if default_model and body.get("model") is None:
        body["model"] = default_model
    try:
        body = validate(ENDPOINT_KINDS[endpoint], body)
    except Exception as e:  # the validator's error names the problem and the field
        param = getattr(e, "param", None)
        msg = f"{param}: {e}" if param and param not in str(e) else str(e)
        return bad("invalid_request", msg, cid)
    return cid, body, None


def numbered_lines(lines: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """(line number, raw) for every non-blank line: the batch's requests in order."""
    for n, raw in enumerate(lines, start=1):
        if raw.strip():
            yield n, raw


def _custom_id_of(raw: bytes | None) -> str | None:
    try:
        cid = orjson.loads(raw).get("custom_id") if raw else None
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return cid if isinstance(cid, str) else None


# ---------------------------------------------------------------- output lines


def output_line(rec, custom_id: str | None, job_error) -> tuple[bool, dict]:
    """(succeeded, the line for the output or the error file) for a finished job."""
    line_id = f"batch_req_{rec.id}"
    if rec.status == "succeeded":
        return True, {"id": line_id, "custom_id": custom_id,
                      "response": {"status_code": 200, "request_id": rec.id, "body": rec.result}, "error": None}
    if rec.error and rec.error.get("line") is not None:  # never became a request: the input line was bad
        e = rec.error
        return False, {"id": line_id, "custom_id": custom_id, "response": None,
                       "error": {"code": e["code"], "message": e["message"], "line": e["line"]}}
    err = job_error(rec)
    return False, {"id": line_id, "custom_id": custom_id,
                   "response": {"status_code": err.status, "request_id": rec.id, "body": err.body()},
                   "error": {"code": err.code or rec.status, "message": err.message}}


def _unrun_line(batch_id: str, index: int, custom_id: str | None, code: str, message: str) -> dict:
    return {"id": f"batch_req_{batch_id}_{index}", "custom_id": custom_id, "response": None,
            "error": {"code": code, "message": message}}


# ---------------------------------------------------------------- the machine


class Batches:
    """Moves batches on. store: the files and batch records (api/store.py's
    LocalStore or RedisStore); backend: the jobs (LocalBackend or RedisBackend);
    job_error(rec) -> an error with status/code/message/body() for a failed job."""

    def __init__(self, backend, store, validate, job_error, limits: BatchLimits | None = None):
        self.backend, self.store, self.validate, self.job_error = backend, store, validate, job_error
        self.limits = limits or BatchLimits()
        self._holder = uuid.uuid4().hex
        self._runs = count()

    # -- what callers see --
    def view(self, batch: dict) -> dict:
        """The batch as stored, with live request counts and "cancelling" while
        a cancel waits for its jobs."""
        b = dict(batch)
        if b["status"] in ("validating", "in_progress"):
            cancelling_at = self.store.get_flag(f"cancel:{b['id']}")
            if cancelling_at is not None:
                b["status"], b["cancelling_at"] = "cancelling", cancelling_at
            if b["status"] != "validating" or b["request_counts"]["total"]:
                b["request_counts"] = self._counts(b)
        return b

    def cancel(self, batch_id: str) -> dict:
        batch = self.store.get_batch(batch_id)
        if batch["status"] in ("validating", "in_progress"):
            self.store.set_flag(f"cancel:{batch_id}", int(time.time()))  # the time of the first cancel
        return self.view(batch)

    def sweep(self, stop=None) -> None:
        """One pass over the open batches; an error leaves a batch for the next."""
        for b in self.store.unfinished_batches():
            if stop is not None and stop.is_set():
                return
            try:
                self.advance(b["id"])
            except LeaseLost:
                log.info("batch %s: another runner took it over", b["id"])
            except Exception as e:  # Redis away, a bug: the batch stays as it is
                log.warning("batch %s: not advanced this time (%s: %s)", b["id"], type(e).__name__, e)

    def advance(self, batch_id: str) -> None:
        holder = f"{self._holder}:{next(self._runs)}"
        lease = f"batch:{batch_id}"
        if not self.store.acquire_lease(lease, holder, self.limits.lease_s):
            return
        try:
            batch = self.store.get_batch(batch_id)
            if batch is not None and batch["status"] not in FINAL_BATCH_STATES:
                _Run(self, batch, holder).step()
        finally:
            self.store.release_lease(lease, holder)

    def _counts(self, batch: dict) -> dict:
        c = self.backend.batch_counts(batch["id"])
        return {"total": batch["request_counts"]["total"] or c.get("total", 0), "completed": c.get("succeeded", 0),
                "failed": c.get("failed", 0) + c.get("cancelled", 0)}


class _Run:
    """One runner's step on one batch, under its lease."""

    def __init__(self, mgr: Batches, batch: dict, holder: str):
        self.mgr, self.store, self.backend, self.limits = mgr, mgr.store, mgr.backend, mgr.limits
        self.batch, self.holder, self.id = batch, holder, batch["id"]

    def _save(self, **fields) -> None:
        self.batch.update(fields)
        if not self.store.put_batch(self.batch, holder=(f"batch:{self.id}", self.holder)):
            raise LeaseLost(self.id)

    def _set(self, status: str, **fields) -> None:
        self._save(status=status, **{f"{status}_at": int(time.time())}, **fields)

    def _renew(self) -> None:
        if not self.store.acquire_lease(f"batch:{self.id}", self.holder, self.limits.lease_s):
            raise LeaseLost(self.id)

    def _fail(self, code: str, message: str) -> None:
        self._set("failed", errors={"object": "list", "data": [{"code": code, "message": message, "param": None,
                                                                "line": None}]})

    def _cancel_requested(self) -> bool:
        return self.store.get_flag(f"cancel:{self.id}") is not None

    def _expired(self) -> bool:
        return time.time() >= self.batch["expires_at"]

    def step(self) -> None:
        status = self.batch["status"]
        if status == "validating":
            self.validate_and_submit()
        elif status == "in_progress":
            self.follow()
        elif status == "finalizing":
            self.finalize(self.batch.get("final") or "completed")

    # -- validating: parse and queue every line --
    def _input(self) -> Iterator[bytes] | None:
        return self.store.iter_file_lines(self.batch["input_file_id"])

    def validate_and_submit(self) -> None:
        lines = self._input()
        if lines is None:
            return self._fail("file_not_found", f"input file {self.batch['input_file_id']} no longer exists")
        n = sum(1 for _ in numbered_lines(lines))
        if n == 0:
            return self._fail("empty_file", "the input file has no requests")
        if n > self.limits.max_lines:
            return self._fail("too_many_requests",
                              f"the input file has {n} requests; a batch holds at most {self.limits.max_lines}")
        self._save(request_counts={"total": n, "completed": 0, "failed": 0})
        models = self.backend.models()
        seen: set[str] = set()
        chunk: list[tuple[int, int, bytes]] = []
        for index, (lineno, raw) in enumerate(numbered_lines(self._input() or ())):
            chunk.append((index, lineno, raw))
            if len(chunk) == self.limits.submit_chunk:
                if self._cancel_requested() or self._expired():
                    break  # the rest is never queued; follow() cancels what was
                self._submit(chunk, models, seen)
                chunk = []
        else:
            if chunk:
                self._submit(chunk, models, seen)
        if self.batch["status"] == "validating":
            self._set("in_progress")
        else:
            self._save()

    def _submit(self, chunk, models: list[str], seen) -> None:
        endpoint, kind = self.batch["endpoint"], ENDPOINT_KINDS[self.batch["endpoint"]]
        default_model = models[0] if len(models) == 1 else None
        items, ids, cids, errors = [], [], [], {}
        for pos, (index, lineno, raw) in enumerate(chunk):
            cid, body, err = parse_line(lineno, raw, endpoint, default_model, self.mgr.validate, seen)
            items.append((kind, body or {}))
            ids.append(line_job_id(self.id, index))
            cids.append(cid)
            if err is None and models and body.get("model") not in (None, *models):
                # as the API answers such a request (404): queued, it would hold the batch open for a day
                err = ModelNotFound(f"model {body['model']!r} is not served here; served: {', '.join(models)}",
                                    "model").to_dict()
            if err is not None:
                errors[pos] = err
            elif self.batch.get("model") is None:
                self.batch["model"] = body.get("model")
        self._renew()
        self.backend.submit_many(items, priority="batch", batch_id=self.id, ids=ids, custom_ids=cids, errors=errors)

    def _stop_reason(self) -> str:
        return "cancelled" if self._cancel_requested() else "expired"

    # -- in progress: wait for the jobs --
    def follow(self) -> None:
        counts = self.mgr._counts(self.batch)
        stopping = self._cancel_requested() or self._expired()
        if not stopping and self.backend.batch_counts(self.id).get("total", 0) < counts["total"]:
            # jobs missing (their creation lost with a Redis rollback): queue them again
            log.warning("batch %s: jobs missing; submitting the missing ones again", self.id)
            return self.validate_and_submit()
        if stopping:
            self.backend.cancel_batch(self.id)  # idempotent: queued jobs end now, running ones soon
            c = self.backend.batch_counts(self.id)
            if c.get("queued", 0) + c.get("running", 0) == 0:
                self._set("finalizing", final=self._stop_reason(), request_counts=self.mgr._counts(self.batch),
                          cancelling_at=self.store.get_flag(f"cancel:{self.id}"))
                self.finalize(self.batch["final"])
            return
        if counts["completed"] + counts["failed"] >= counts["total"]:
            self._set("finalizing", final="completed", request_counts=counts)
            self.finalize("completed")
        elif counts != self.batch["request_counts"]:
            self._save(request_counts=counts)

    # -- finalizing: write the output and error files in input order --
    def finalize(self, final: str) -> None:
        usage = {"input_tokens": 0, "output_tokens": 0, "cached_tokens": 0}
        out, err = self._writer("output"), self._writer("errors")
        good = bad = 0
        for ok, line in self._output_lines(final, usage):
            (out if ok else err).append(orjson.dumps(line) + b"\n")
            good, bad = good + ok, bad + (not ok)
        self._renew()
        fields = {"output_file_id": out.close() if good else None, "error_file_id": err.close() if bad else None,
                  "request_counts": {"total": good + bad, "completed": good, "failed": bad},
                  "usage": {"input_tokens": usage["input_tokens"],
                            "input_tokens_details": {"cached_tokens": usage["cached_tokens"]},
                            "output_tokens": usage["output_tokens"], "output_tokens_details": {"reasoning_tokens": 0},
                            "total_tokens": usage["input_tokens"] + usage["output_tokens"]}}
        self._set(final, **fields)

    def _writer(self, suffix: str) -> "_FileWriter":
        return _FileWriter(self.store, {
            "id": output_file_id(self.id, suffix), "object": "file", "bytes": 0, "created_at": int(time.time()),
            "filename": f"{self.id}_{suffix}.jsonl", "purpose": "batch_output", "status": "processed",
            "expires_at": None, "status_details": None, "owner": self.batch.get("owner", "")})

    def _output_lines(self, final: str, usage: dict) -> Iterator[tuple[bool, dict]]:
        total = self.batch["request_counts"]["total"]
        raws = (raw for _, raw in numbered_lines(self._input() or ()))
        code = "batch_expired" if final == "expired" else "batch_cancelled"
        for start in range(0, total, READ_CHUNK):
            self._renew()
            idx = range(start, min(total, start + READ_CHUNK))
            recs = self.backend.get_many([line_job_id(self.id, i) for i in idx])
            for i, rec in zip(idx, recs):
                raw = next(raws, None)
                if rec is None or rec.status not in TERMINAL:
                    cid = rec.custom_id if rec is not None else _custom_id_of(raw)
                    yield False, _unrun_line(self.id, i, cid, code if final != "completed" else "job_lost",
                                             f"the batch was {final} before this request ran" if final != "completed"
                                             else "the job is no longer known to the queue")
                    continue
                _count_usage(usage, rec)
                yield output_line(rec, rec.custom_id, self.mgr.job_error)


def _count_usage(usage: dict, rec) -> None:
    u = (rec.result or {}).get("usage") if isinstance(rec.result, dict) else None
    if not u:
        return
    usage["input_tokens"] += u.get("prompt_tokens", 0) or 0
    usage["output_tokens"] += u.get("completion_tokens", 0) or 0
    usage["cached_tokens"] += (u.get("prompt_tokens_details") or {}).get("cached_tokens", 0) or 0


class _FileWriter:
    """Streams lines into a store file in chunks (store.open_file_writer)."""

    CHUNK = 1 << 20

    def __init__(self, store, meta: dict):
        self.store, self.meta, self.buf, self.w = store, meta, bytearray(), None

    def append(self, line: bytes) -> None:
        self.buf += line
        if len(self.buf) >= self.CHUNK:
            self._flush()

    def _flush(self) -> None:
        if self.w is None:
            self.w = self.store.open_file_writer(self.meta)
        self.w.write(bytes(self.buf))
        self.meta["bytes"] += len(self.buf)
        self.buf.clear()

    def close(self) -> str:
        self._flush()
        self.w.commit(self.meta)
        return self.meta["id"]
