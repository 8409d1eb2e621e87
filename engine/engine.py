"""The engine: one thread owns one llama.cpp context and decodes every running
request in one batch per step (continuous batching), like llama-server's slot
loop, with prompts sharing cached prefixes across sequences. Each step is
schedule (admit, plan a batch), run (one llama_decode), postprocess (sample,
stream text, finish)."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import llama_cpp

from . import sampling
from .batch import Batch
from .config import EngineConfig
from .constrained import compile_request_constraint
from .embedder import Embedder
from .errors import EngineDead, EngineError, InvalidRequest, PromptTooLong, QueueFull, RequestFailed
from .handle import Handle
from .model import Model
from .scheduler import Chunk, Scheduler
from .schema import validate_output
from .sequence import Sequence, Status
from .slots import Slots
from .text_stream import TextStream
from .types import EngineStats, Request, Result, SamplingParams, Timings, Usage

log = logging.getLogger("llamaq.engine")


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.thread_time()


class Engine:
    def __init__(self, config: EngineConfig | None = None, **overrides):
        self.config = cfg = config or EngineConfig(**overrides)
        cfg.validate()
        self.model = Model(cfg.resolved_model_path(), n_gpu_layers=cfg.n_gpu_layers, verbose=cfg.verbose)
        try:
            self._setup(cfg)
        except BaseException:
            self.model.close()  # a context that could not be made must not leak the weights
            raise
        self._embedder: Embedder | None = None
        self._embed_lock = threading.Lock()
        self._stats = EngineStats()
        self._inbox: deque[Sequence] = deque()
        self._cancels: deque[Sequence] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._closed = False
        self._dead: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="llamaq-engine", daemon=True)
        self._thread.start()

    def _setup(self, cfg: EngineConfig) -> None:
        m = self.model
        self.n_ctx = min(cfg.n_ctx, max(m.n_ctx_train, 512)) if m.n_ctx_train else cfg.n_ctx
        self.n_ctx_seq = min(cfg.max_ctx_per_seq or self.n_ctx, self.n_ctx)
        n_seq = cfg.n_parallel + cfg.n_seq_cache
        self._ctx = m.new_context(n_ctx=self.n_ctx, n_batch=cfg.n_batch, n_seq_max=n_seq, n_threads=cfg.n_threads,
                                  swa_full=cfg.swa_full, flash_attn=cfg.flash_attn, kv_type=cfg.kv_type)
        self._batch = Batch(cfg.n_batch)
        self._sched = Scheduler(Slots(self._ctx, n_seq), n_ctx=self.n_ctx, n_parallel=cfg.n_parallel,
                                n_batch=cfg.n_batch, share=m.can_share_prefix, n_swa=0 if cfg.swa_full else m.n_swa)
        self._sampler = sampling.Sampler(self._ctx, m, self.n_ctx_seq, fast=cfg.fast_sampling, n_threads=cfg.n_threads)

    # ---------------------------------------------------------------- public API
    @property
    def model_name(self) -> str:
        return self.model.name

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        self._require_open()
        return self.model.tokenize(text, add_special=add_special)

    def detokenize(self, tokens: list[int]) -> str:
        self._require_open()
        self._check_tokens(tokens, "tokens")
        return self.model.detokenize(tokens)

    def submit(self, request: Request) -> Handle:
        """Queue a request. Raises InvalidRequest, PromptTooLong, QueueFull or EngineDead."""
        self._require_open()
        seq = self._new_sequence(request)
        with self._cond:  # checked again under the lock: a close() meanwhile must not strand the handle
            self._require_open()
            if len(self._inbox) + len(self._sched.waiting) >= self.config.max_waiting:
                raise QueueFull(f"engine queue is full ({self.config.max_waiting} requests waiting); retry later")
            self._inbox.append(seq)
            self._cond.notify()
        return seq.handle

    def generate(self, prompt: str | list[int], **params) -> Result:
        """Convenience: submit and wait."""
        return self.submit(Request(prompt, SamplingParams(**params))).result()

    def embed(self, texts: list[str]) -> list[list[float]]:
        with self._embed_lock:
            self._require_open()
            if self._embedder is None:
                self._embedder = Embedder(self.model, self.config)
            embedder = self._embedder
        return embedder.embed(texts)

    def stats(self) -> EngineStats:
        s = self._stats
        s.waiting = len(self._inbox) + len(self._sched.waiting)
        s.running = len(self._sched.running)
        s.evictions = self._sched.evictions
        return EngineStats(**vars(s))

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self._dead is None

    def close(self) -> None:
        """Stop the engine and free the model; pending requests fail with EngineDead.
        Safe to call more than once."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout=30)
        with self._embed_lock:
            if self._closed or self._thread.is_alive():
                return
            self._closed = True
            self._sampler.close()
            if self._embedder:
                self._embedder.close()
            llama_cpp.llama_free(self._ctx)
            self.model.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- helpers
    def _require_open(self) -> None:
        if self._dead is not None or self._closing:
            raise EngineDead(f"engine is not running: {self._dead or 'closed'}")

    def _check_tokens(self, tokens: object, param: str) -> None:
        n = self.model.n_vocab
        if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < n for t in tokens):
            raise InvalidRequest(f"{param} must be a list of token ids in 0..{n - 1}", param=param)

    def _new_sequence(self, request: Request) -> Sequence:
        p = request.params
        sampling.validate(p, self.model.n_vocab)
        if not isinstance(request.priority, int) or isinstance(request.priority, bool):
            raise InvalidRequest("priority must be an integer", param="priority")
        prompt = self._prompt_tokens(request.prompt)
        if len(prompt) + 1 > self.n_ctx_seq:
            raise PromptTooLong(len(prompt), self.n_ctx_seq - 1)
        handle = Handle(request, on_cancel=lambda: self._request_cancel(seq))
        seq = Sequence(request, handle, prompt, max_tokens=min(p.max_tokens, self.n_ctx_seq - len(prompt)),
                       stream=TextStream(p.stop), matcher=compile_request_constraint(p.constraint, self.model))
        return seq

    def _request_cancel(self, seq: Sequence) -> None:
        with self._cond:
            self._cancels.append(seq)
            self._cond.notify()

    def _prompt_tokens(self, prompt: str | list[int]) -> list[int]:
        if not prompt:
            raise InvalidRequest("prompt is empty", param="prompt")
        if isinstance(prompt, str):
            bos = self.model.token_bytes(self.model.bos, special=True).decode("utf-8", "replace")
            # A rendered chat template usually writes BOS itself: don't add a second.
            return self.model.tokenize(prompt, add_special=not (bos and prompt.startswith(bos)))
        self._check_tokens(prompt, "prompt")
        return list(prompt)

    # ---------------------------------------------------------------- the loop
    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._closing and not self._inbox and not self._cancels and not self._has_work():
                        self._cond.wait()
                    if self._closing:
                        break
                    while self._inbox:
                        self._sched.add(self._inbox.popleft())
                try:
                    self._step()
                except Exception as e:  # a bug in one step fails that step's requests, not the engine
                    log.exception("engine step failed")
                    error = RequestFailed(f"engine step failed: {type(e).__name__}: {e}")
                    for seq in list(self._sched.running):
                        self._fail(seq, error)
                    self._sched.reset()
        except BaseException as e:
            self._dead = e
            log.exception("engine thread died")
        finally:
            self._fail_everything(EngineDead(f"engine stopped: {self._dead or 'closed'}"))

    def _has_work(self) -> bool:
        return bool(self._sched.running or self._sched.waiting)

    def _step(self) -> None:
        t0 = _clock()
        chunks = self._schedule()
        if not chunks:
            if self._sched.waiting:  # waiting on a leader or for room: don't spin
                time.sleep(0.001)
            return
        if self._run_batch(chunks):
            self._postprocess(chunks)
        self._time("step", t0)

    def _time(self, part: str, since: tuple[float, float]) -> None:
        """Add the wall and engine-thread CPU ms since `since` to the stats' `part` timers
        (CPU time: what the host work costs, whatever else shares the cores)."""
        now, s = _clock(), self._stats
        setattr(s, f"{part}_ms", getattr(s, f"{part}_ms") + (now[0] - since[0]) * 1000)
        setattr(s, f"{part}_cpu_ms", getattr(s, f"{part}_cpu_ms") + (now[1] - since[1]) * 1000)

    def _schedule(self) -> list[Chunk]:
        self._reap_cancelled()
        for seq in self._sched.admit():
            self._start(seq)
        return self._sched.plan()

    def _start(self, seq: Sequence) -> None:
        self._stats.prompt_tokens_reused += seq.n_reused
        try:
            self._sampler.start(seq)
        except Exception as e:
            self._fail(seq, RequestFailed(f"could not set up sampling: {e}"))

    def _run_batch(self, chunks: list[Chunk]) -> bool:
        """Decode one batch; on failure evict, shrink or fail, and report False."""
        batch = self._batch
        batch.clear()
        for c in chunks:
            idx = batch.add(c.tokens, c.start, c.seq.seq_id, c.logits)
            c.seq.batch_index = idx if c.logits else -1
        t0 = _clock()
        rc = llama_cpp.llama_decode(self._ctx, batch.as_llama())
        llama_cpp.llama_synchronize(self._ctx)  # a GPU may still be computing: count that as decode, not sampling
        self._time("decode", t0)
        self._stats.steps += 1
        self._stats.batch_tokens += batch.n
        if rc == 0:
            self._stats.prompt_tokens_computed += sum(len(c.tokens) for c in chunks if c.seq.status is Status.PREFILL)
            return True
        if rc == 1:  # no KV room: free idle cache first, then give up on the largest request
            if not self._sched.evict_all():
                victim = max(self._sched.running, key=lambda s: s.n_past)
                self._fail(victim, RequestFailed("KV cache is full: the context cannot hold this request next to the others"))
            return False
        err = RequestFailed(f"llama_decode failed (code {rc})")
        for seq in {c.seq for c in chunks}:
            self._fail(seq, err)
        return False

    def _postprocess(self, chunks: list[Chunk]) -> None:
        now = time.perf_counter()
        for c in chunks:
            self._sched.advance(c)
        ready = [c.seq for c in chunks if c.logits and c.seq.running]
        t0 = _clock()
        tokens, pool_cpu_ms = self._sampler.sample(ready, sum(c.logits for c in chunks))
        self._time("sample", t0)
        self._stats.sample_cpu_ms += pool_cpu_ms
        self._stats.step_cpu_ms += pool_cpu_ms
        for seq, token in zip(ready, tokens):
            self._accept(seq, token, now)

    def _accept(self, seq: Sequence, token: int | Exception, now: float) -> None:
        """Take a sampled token (or the error sampling raised): an error fails this request only."""
        try:
            if isinstance(token, Exception):
                raise token
            if seq.status is Status.PREFILL:
                seq.status = Status.DECODE
                seq.first_token = now
            seq.tokens.append(token)
            self._stats.generated_tokens += 1
            reason = self._advance(seq, token)
            if reason:
                self._complete(seq, reason)
        except Exception as e:
            log.exception("request %s failed", seq.request.id)
            self._fail(seq, e if isinstance(e, InvalidRequest) else RequestFailed(f"{type(e).__name__}: {e}"))

    def _advance(self, seq: Sequence, token: int) -> str | None:
        """Emit the token's text; return a finish reason if the request is done."""
        if self.model.is_eog(token):
            return "stop"
        seq.handle._push(seq.stream.feed(self.model.token_bytes(token)))
        if seq.stream.stopped or (seq.matcher is not None and seq.matcher.is_finished()):
            return "stop"
        if seq.n_generated >= seq.max_tokens or seq.n_past + 1 >= self.n_ctx_seq:
            return "length"
        return None

    # ---------------------------------------------------------------- endings
    def _complete(self, seq: Sequence, reason: str) -> None:
        seq.handle._push(seq.stream.flush())
        self._stats.requests_finished += 1
        self._end(seq, reason)

    def _end(self, seq: Sequence, reason: str) -> None:
        """Resolve the handle with a result; a running sequence's KV stays as prefix cache."""
        if seq.running:
            self._sched.finish(seq)
        else:  # waiting (or still in the inbox: _run moved it to waiting already)
            self._sched.drop(seq)
        self._sampler.free(seq)
        seq.handle._finish(self._result(seq, reason))

    def _result(self, seq: Sequence, reason: str) -> Result:
        ms = lambda t: (t - seq.submitted) * 1000 if t else 0.0  # noqa: E731
        text = seq.stream.text
        timings = Timings(queue_ms=ms(seq.admitted), ttft_ms=ms(seq.first_token), total_ms=ms(time.perf_counter()))
        return Result(text, reason, Usage(seq.n_prompt, seq.n_generated, seq.n_reused), timings,  # type: ignore[arg-type]
                      tokens=seq.tokens, incomplete=self._incomplete(seq, text))

    @staticmethod
    def _incomplete(seq: Sequence, text: str) -> bool:
        """Constrained output that is cut short (max_tokens, a stop string) or,
        as a last line of defence, does not validate: never a success."""
        if seq.matcher is None:
            return False
        return not seq.matcher.is_accepting() or validate_output(seq.request.params.constraint, text) is not None

    def _reap_cancelled(self) -> None:
        while self._cancels:
            seq = self._cancels.popleft()
            if seq.handle.done:
                continue
            try:
                self._end(seq, "cancelled")
            except Exception as e:  # fails this request only, not everything running
                log.exception("request %s failed while cancelling", seq.request.id)
                self._fail(seq, RequestFailed(f"{type(e).__name__} while cancelling: {e}"))

    def _fail(self, seq: Sequence, error: EngineError) -> None:
        self._sched.drop(seq)
        self._sampler.free(seq)
        seq.handle._finish(None, error)

    def _fail_everything(self, error: EngineError) -> None:
        with self._cond:
            pending = [*self._inbox, *self._sched.waiting, *self._sched.running]
            self._inbox.clear()
        for seq in pending:
            self._sampler.free(seq)
            seq.handle._finish(None, error)
