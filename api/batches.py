"""OpenAI Batch API lifecycle, run beside the HTTP server.

One thread per open batch: parse and validate the input file (bad lines become
error lines), hand the good ones to the backend as batch-priority jobs with
submit_many, follow them (request_counts live), write the output and error
files in input order. State lives in the Store, so another API process can take
over an open batch (a lease per batch) after a restart."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass

import orjson

from .ids import new_id
from .jobresult import job_error
from .store import FINAL_BATCH_STATES, Store

log = logging.getLogger("llamaq.api.batches")

ENDPOINT_KINDS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completion",
    "/v1/embeddings": "embedding",
    "/v1/translations": "translation",
}
TERMINAL_JOB_STATES = ("succeeded", "failed", "cancelled")
COMPLETION_WINDOWS = {"24h": 24 * 3600}


@dataclass
class BatchLimits:
    max_lines: int = 50_000
    max_bytes: int = 200 * 1024 * 1024
    submit_chunk: int = 2000  # lines per submit_many call
    poll_s: float = 0.25
    lease_s: float = 30.0
    front_window: int = 256  # unfinished jobs looked at per poll, in submission order
    full_sweep_s: float = 20.0  # and all of them this often (jobs finishing out of order)


@dataclass
class Line:
    index: int
    custom_id: str | None
    body: dict | None = None
    error: dict | None = None  # {"code", "message"} for lines that never became jobs


def parse_input(content: bytes, endpoint: str, default_model: str | None, validate) -> list[Line]:
    """Every non-blank line of the input file, good or bad, in order."""
    lines: list[Line] = []
    seen: set[str] = set()
    for n, raw in enumerate(content.split(b"\n"), start=1):
        if not raw.strip():
            continue
        lines.append(_parse_line(n, raw, endpoint, default_model, validate, seen, len(lines)))
    return lines


def _parse_line(n, raw, endpoint, default_model, validate, seen, index) -> Line:
    def bad(code: str, message: str, custom_id=None) -> Line:
        return Line(index, custom_id, error={"code": code, "message": f"line {n}: {message}", "line": n})

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
    return Line(index, cid, body=body)


def output_line(line: Line, rec) -> tuple[bool, dict]:
    """(succeeded, the line for the output or the error file) for a finished job."""
    line_id = f"batch_req_{rec.id}"
    if rec.status == "succeeded":
        return True, {
            "id": line_id,
            "custom_id": line.custom_id,
            "response": {"status_code": 200, "request_id": rec.id, "body": rec.result},
            "error": None,
        }
    err = job_error(rec)
    return False, {
        "id": line_id,
        "custom_id": line.custom_id,
        "response": {"status_code": err.status, "request_id": rec.id, "body": err.body()},
        "error": {"code": err.code or rec.status, "message": err.message},
    }


def public(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k != "owner"}


def new_batch(owner: str, input_file_id: str, endpoint: str, window: str, metadata: dict | None) -> dict:
    now = int(time.time())
    return {
        "id": new_id("batch_"), "object": "batch", "endpoint": endpoint, "errors": None,
        "input_file_id": input_file_id, "completion_window": window, "status": "validating",
        "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
        "expires_at": now + COMPLETION_WINDOWS[window], "finalizing_at": None, "completed_at": None,
        "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
        "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": metadata, "model": None,
        "usage": None, "owner": owner,
    }


class BatchManager:
    """Starts a runner per open batch and adopts open batches nobody runs."""

    def __init__(self, backend, store: Store, validate, limits: BatchLimits | None = None):
        self.backend = backend
        self.store = store
        self.validate = validate
        self.limits = limits or BatchLimits()
        self.holder = uuid.uuid4().hex
        self._runners: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._adopter = threading.Thread(target=self._adopt_loop, name="batch-adopter", daemon=True)

    def start(self) -> None:
        self._adopter.start()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        self._stop.set()
        for t in list(self._runners.values()):
            t.join(timeout=2)

    def create(self, batch: dict) -> None:
        self.store.put_batch(batch)
        self._run(batch["id"])

    def cancel(self, batch_id: str) -> dict:
        batch = self.store.get_batch(batch_id)
        if batch["status"] in ("validating", "in_progress", "finalizing"):
            self.store.set_flag(f"cancel:{batch_id}")
            if batch["status"] != "finalizing":
                batch["status"], batch["cancelling_at"] = "cancelling", int(time.time())
                self.store.put_batch(batch)
        return batch

    def _run(self, batch_id: str) -> None:
        with self._lock:
            t = self._runners.get(batch_id)
            if t is not None and t.is_alive():
                return
            if not self.store.acquire_lease(f"batch:{batch_id}", self.holder, self.limits.lease_s):
                return
            t = threading.Thread(target=self._run_guarded, args=(batch_id,), name=f"batch-{batch_id}", daemon=True)
            self._runners[batch_id] = t
        t.start()

    def _run_guarded(self, batch_id: str) -> None:
        try:
            BatchRun(self, batch_id).run()
        except Exception as e:  # a bug or a lost backend: fail the batch, say why
            log.exception("batch %s failed", batch_id)
            batch = self.store.get_batch(batch_id)
            if batch and batch["status"] not in FINAL_BATCH_STATES:
                batch["status"], batch["failed_at"] = "failed", int(time.time())
                batch["errors"] = {"object": "list", "data": [
                    {"code": "internal_error", "message": f"{type(e).__name__}: {e}", "param": None, "line": None}]}
                self.store.put_batch(batch)
        finally:
            self.store.release_lease(f"batch:{batch_id}", self.holder)

    def _adopt_loop(self) -> None:
        while not self._stop.is_set():
            try:
                for b in self.store.unfinished_batches():
                    self._run(b["id"])
            except Exception:
                log.exception("adopting open batches")
            self._stop.wait(self.limits.lease_s)


class BatchRun:
    def __init__(self, mgr: BatchManager, batch_id: str):
        self.mgr, self.store, self.backend, self.limits = mgr, mgr.store, mgr.backend, mgr.limits
        self.batch_id = batch_id
        self.batch = self.store.get_batch(batch_id)
        self.lines: list[Line] = []
        self.outputs: dict[int, tuple[bool, dict]] = {}  # line index -> (ok, output line)
        self.usage = {"input_tokens": 0, "output_tokens": 0, "cached_tokens": 0}
        self._last_save = 0.0

    # -- helpers --
    def _cancel_requested(self) -> bool:
        return self.store.has_flag(f"cancel:{self.batch_id}")

    def _set(self, status: str, **fields) -> None:
        self.batch["status"] = status
        self.batch[f"{status}_at"] = int(time.time())
        self.batch.update(fields)
        self._save(force=True)

    def _save(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_save < 0.5:
            return
        self._last_save = now
        if self.batch["status"] in ("validating", "in_progress") and self._cancel_requested():
            self.batch["status"] = "cancelling"
            self.batch["cancelling_at"] = self.batch["cancelling_at"] or int(time.time())
        ok = sum(1 for good, _ in self.outputs.values() if good)
        self.batch["request_counts"] = {"total": len(self.lines), "completed": ok,
                                        "failed": len(self.outputs) - ok}
        u = self.usage
        self.batch["usage"] = {
            "input_tokens": u["input_tokens"], "input_tokens_details": {"cached_tokens": u["cached_tokens"]},
            "output_tokens": u["output_tokens"], "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": u["input_tokens"] + u["output_tokens"]}
        self.store.put_batch(self.batch)
        self.store.acquire_lease(f"batch:{self.batch_id}", self.mgr.holder, self.limits.lease_s)

    def _fail(self, code: str, message: str) -> None:
        self.batch["errors"] = {"object": "list", "data": [{"code": code, "message": message, "param": None,
                                                            "line": None}]}
        self._set("failed")

    # -- the lifecycle --
    def run(self) -> None:
        if self.batch is None or self.batch["status"] in FINAL_BATCH_STATES:
            return
        content = self.store.file_content(self.batch["input_file_id"])
        if content is None:
            return self._fail("file_not_found", f"input file {self.batch['input_file_id']} no longer exists")
        models = self.backend.models()
        default_model = models[0] if len(models) == 1 else None
        self.lines = parse_input(content, self.batch["endpoint"], default_model, self.mgr.validate)
        del content
        if not self.lines:
            return self._fail("empty_file", "the input file has no requests")
        if len(self.lines) > self.limits.max_lines:
            return self._fail("too_many_requests",
                              f"the input file has {len(self.lines)} requests; a batch holds at most "
                              f"{self.limits.max_lines}")
        for line in self.lines:
            if line.error is not None:
                self.outputs[line.index] = (False, {"id": f"batch_req_{self.batch_id}_{line.index}",
                                                    "custom_id": line.custom_id, "response": None,
                                                    "error": line.error})
        good = [ln for ln in self.lines if ln.body is not None]
        if good and self.batch.get("model") is None:
            self.batch["model"] = good[0].body.get("model")
        if self.batch["status"] == "validating":
            if self._cancel_requested():
                return self._finish_cancelled({ln.index: ln for ln in good})
            self._set("in_progress")
        jobs = self._submit(good)
        self._follow(jobs)

    def _submit(self, good: list[Line]) -> dict[int, str]:
        """line index -> job id; resumes after the jobs a previous run submitted."""
        done = self.store.batch_jobs(self.batch_id)
        jobs = {ln.index: jid for ln, jid in zip(good, done)}
        kind = ENDPOINT_KINDS[self.batch["endpoint"]]
        step = self.limits.submit_chunk
        for start in range(len(done), len(good), step):
            if self._cancel_requested() or self.mgr.stopping:
                break
            chunk = good[start:start + step]
            ids = self.backend.submit_many([(kind, ln.body) for ln in chunk], priority="batch",
                                           batch_id=self.batch_id)
            self.store.add_batch_jobs(self.batch_id, ids)
            jobs.update({ln.index: jid for ln, jid in zip(chunk, ids)})
            self._save()
        return jobs

    def _follow(self, jobs: dict[int, str]) -> None:
        by_index = {ln.index: ln for ln in self.lines}
        pending = [(i, jobs[i]) for i in sorted(jobs)]
        last_sweep = time.monotonic()
        cancelled = False
        while pending:
            if self.mgr.stopping:  # shutting down: the batch stays open for whoever runs next
                return
            if not cancelled and (self._cancel_requested() or time.time() >= self.batch["expires_at"]):
                cancelled = True
                self._cancel_jobs(pending)
            full = cancelled or time.monotonic() - last_sweep > self.limits.full_sweep_s
            if full:
                last_sweep = time.monotonic()
            if full or self._more_finished(len(jobs) - len(pending)):
                pending = self._poll(pending, by_index, full)
            self._save()
            if pending:
                time.sleep(self.limits.poll_s)
        unsent = [ln for ln in self.lines if ln.body is not None and ln.index not in jobs]
        if cancelled or unsent:
            expired = not self._cancel_requested() and time.time() >= self.batch["expires_at"]
            return self._finish_cancelled({ln.index: ln for ln in unsent}, expired=expired)
        self._finalize("completed")

    def _more_finished(self, collected: int) -> bool:
        """Whether the backend's counters say jobs finished that we have not
        collected (one cheap call instead of reading job records for nothing)."""
        counts_of = getattr(self.backend, "batch_counts", None)
        if counts_of is None:
            return True
        c = counts_of(self.batch_id)
        return c.get("succeeded", 0) + c.get("failed", 0) + c.get("cancelled", 0) > collected

    def _poll(self, pending, by_index, full: bool):
        get_many = getattr(self.backend, "get_many", None)
        still, unfinished = [], 0
        for pos in range(0, len(pending), 256):
            part = pending[pos:pos + 256]
            if not full and unfinished >= self.limits.front_window:
                still.extend(pending[pos:])
                break
            recs = get_many([j for _, j in part]) if get_many else [self.backend.get(j) for _, j in part]
            for (i, jid), rec in zip(part, recs):
                if rec is None:  # expired or lost: report it rather than wait forever
                    self.outputs[i] = (False, _lost_line(by_index[i], jid))
                elif rec.status in TERMINAL_JOB_STATES:
                    self.outputs[i] = output_line(by_index[i], rec)
                    self._count_usage(rec)
                else:
                    unfinished += 1
                    still.append((i, jid))
        return still

    def _count_usage(self, rec) -> None:
        usage = (rec.result or {}).get("usage") if isinstance(rec.result, dict) else None
        if not usage:
            return
        self.usage["input_tokens"] += usage.get("prompt_tokens", 0) or 0
        self.usage["output_tokens"] += usage.get("completion_tokens", 0) or 0
        details = usage.get("prompt_tokens_details") or {}
        self.usage["cached_tokens"] += details.get("cached_tokens", 0) or 0

    def _cancel_jobs(self, pending) -> None:
        if self.batch["status"] == "in_progress" and self._cancel_requested():
            self.batch["status"], self.batch["cancelling_at"] = "cancelling", int(time.time())
            self._save(force=True)
        cancel_batch = getattr(self.backend, "cancel_batch", None)
        if cancel_batch is not None:
            cancel_batch(self.batch_id)
        else:
            for _, jid in pending:
                self.backend.cancel(jid)

    def _finish_cancelled(self, unsent: dict[int, Line], expired: bool = False) -> None:
        code = "batch_expired" if expired else "batch_cancelled"
        for i, ln in unsent.items():
            self.outputs[i] = (False, {"id": f"batch_req_{self.batch_id}_{i}", "custom_id": ln.custom_id,
                                       "response": None,
                                       "error": {"code": code, "message": f"the batch was "
                                                 f"{'expired' if expired else 'cancelled'} before this request ran"}})
        self._finalize("expired" if expired else "cancelled")

    def _finalize(self, final: str) -> None:
        if final == "completed":
            self._set("finalizing")
        ok_lines = [self.outputs[i][1] for i in sorted(self.outputs) if self.outputs[i][0]]
        err_lines = [self.outputs[i][1] for i in sorted(self.outputs) if not self.outputs[i][0]]
        fields = {"output_file_id": self._write_file(ok_lines, "output") if ok_lines else None,
                  "error_file_id": self._write_file(err_lines, "errors") if err_lines else None}
        self._set(final, **fields)

    def _write_file(self, lines: list[dict], suffix: str) -> str:
        content = b"".join(orjson.dumps(line) + b"\n" for line in lines)
        meta = {"id": new_id("file-"), "object": "file", "bytes": len(content), "created_at": int(time.time()),
                "filename": f"{self.batch_id}_{suffix}.jsonl", "purpose": "batch_output", "status": "processed",
                "expires_at": None, "status_details": None, "owner": self.batch.get("owner", "")}
        self.store.put_file(meta, content)
        return meta["id"]


def _lost_line(line: Line, job_id: str) -> dict:
    return {"id": f"batch_req_{job_id}", "custom_id": line.custom_id, "response": None,
            "error": {"code": "job_lost", "message": f"job {job_id} is no longer known to the queue"}}
