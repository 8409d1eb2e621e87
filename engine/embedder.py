"""Embeddings in their own context: mean pooled, L2-normalised, and batched:
inputs from all concurrent callers are packed into as few decodes as fit."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

import llama_cpp
import numpy as np

from .config import EngineConfig
from .errors import EngineDead, InvalidRequest, PromptTooLong
from .model import Model


class Embedder:
    def __init__(self, model: Model, cfg: EngineConfig):
        self.model = model
        self.n_ctx = cfg.embedding_n_ctx
        self.n_batch = min(cfg.embedding_n_batch, cfg.embedding_n_ctx)
        self.n_seq = 64
        self._ctx = model.new_context(
            n_ctx=self.n_ctx, n_batch=self.n_batch, n_seq_max=self.n_seq, n_threads=cfg.n_threads, embeddings=True
        )
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="llamaq-embedder", daemon=True)
        self._thread.start()

    def embed(self, texts: list[str | list[int]]) -> list[list[float]]:
        """Strings, or token id lists (in the vocabulary: the caller checks) embedded as given."""
        if not isinstance(texts, list) or not all(isinstance(t, (str, list)) for t in texts):
            raise InvalidRequest("input must be a string or a list of strings", param="input")
        tokens = []
        for i, t in enumerate(texts):
            toks = list(t) if isinstance(t, list) else self.model.tokenize(t) if t else []
            if not toks:
                raise InvalidRequest(f"input[{i}] is empty", param="input")
            if len(toks) > self.n_batch:
                raise PromptTooLong(len(toks), self.n_batch)
            tokens.append(toks)
        if self._ctx is None:
            raise EngineDead("the embedder is closed")
        fut: Future = Future()
        self._queue.put((tokens, fut))
        return fut.result()

    def close(self) -> None:
        """Stop the thread and free the context; safe to call more than once."""
        self._queue.put(None)
        self._thread.join(timeout=10)
        if self._ctx is not None and not self._thread.is_alive():
            llama_cpp.llama_batch_free(self._batch)
            llama_cpp.llama_free(self._ctx)
            self._ctx = None

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            jobs = [item]
            while True:  # take every request already waiting: one batch for all callers
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                jobs.append(nxt)
            inputs = [toks for toks, _ in jobs for toks in toks]
            try:
                vectors = self._embed_all(inputs)
            except Exception as e:
                for _, fut in jobs:
                    fut.set_exception(EngineDead(f"embedding failed: {e}"))
                continue
            k = 0
            for toks, fut in jobs:
                fut.set_result(vectors[k : k + len(toks)])
                k += len(toks)

    def _embed_all(self, inputs: list[list[int]]) -> list[list[float]]:
        out: list[list[float]] = []
        i = 0
        while i < len(inputs):
            group, used = [], 0
            while i < len(inputs) and len(group) < self.n_seq and used + len(inputs[i]) <= self.n_batch:
                group.append(inputs[i])
                used += len(inputs[i])
                i += 1
            out.extend(self._decode(group))
        return out

    def _decode(self, group: list[list[int]]) -> list[list[float]]:
        b = self._batch
        n = 0
        for s, toks in enumerate(group):
            for pos, t in enumerate(toks):
                b.token[n], b.pos[n], b.n_seq_id[n] = t, pos, 1
                b.seq_id[n][0] = s
                b.logits[n] = 1
                n += 1
        b.n_tokens = n
        llama_cpp.llama_memory_clear(self._mem, True)
        rc = llama_cpp.llama_decode(self._ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed (code {rc})")
        dim = self.model.n_embd
        vecs = []
        for s in range(len(group)):
            ptr = llama_cpp.llama_get_embeddings_seq(self._ctx, s)
            v = np.ctypeslib.as_array(ptr, shape=(dim,)).astype(np.float64)
            norm = np.linalg.norm(v)
            vecs.append((v / norm if norm > 0 else v).tolist())
        return vecs
