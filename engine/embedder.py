"""Embeddings in their own context: mean pooled, L2-normalised, and batched:
inputs from all concurrent callers are packed into as few decodes as fit."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

import llama_cpp
import numpy as np

from .batch import Batch
from .config import EngineConfig
from .errors import EngineDead, InvalidRequest, PromptTooLong
from .model import Model

_N_SEQ = 64  # inputs in one decode


class Embedder:
    def __init__(self, model: Model, cfg: EngineConfig):
        self.model = model
        self.n_batch = min(cfg.embedding_n_batch, cfg.embedding_n_ctx)
        self._ctx = model.new_context(n_ctx=cfg.embedding_n_ctx, n_batch=self.n_batch, n_seq_max=_N_SEQ,
                                      n_threads=cfg.n_threads, embeddings=True)
        self._batch = Batch(self.n_batch)
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
            llama_cpp.llama_free(self._ctx)
            self._ctx = None

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            jobs = [item]
            while not self._queue.empty():  # every request already waiting: one batch for all callers
                if (item := self._queue.get()) is None:
                    self._queue.put(None)
                    break
                jobs.append(item)
            try:
                vectors = self._embed_all([toks for inputs, _ in jobs for toks in inputs])
            except Exception as e:
                for _, fut in jobs:
                    fut.set_exception(EngineDead(f"embedding failed: {e}"))
                continue
            k = 0
            for inputs, fut in jobs:
                fut.set_result(vectors[k : k + len(inputs)])
                k += len(inputs)

    def _embed_all(self, inputs: list[list[int]]) -> list[list[float]]:
        out: list[list[float]] = []
        n_seq = 0
        for toks in inputs:
            if n_seq == _N_SEQ or self._batch.n + len(toks) > self.n_batch:
                out += self._decode(n_seq)
                n_seq = 0
            self._batch.add(toks, 0, n_seq, False)
            n_seq += 1
        return out + self._decode(n_seq) if n_seq else out

    def _decode(self, n_seq: int) -> list[list[float]]:
        b = self._batch
        b.logits[: b.n] = 1  # mean pooling reads every token's output
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self._ctx), True)
        rc = llama_cpp.llama_decode(self._ctx, b.as_llama())
        b.clear()
        if rc != 0:
            raise RuntimeError(f"llama_decode failed (code {rc})")
        vecs = []
        for s in range(n_seq):
            ptr = llama_cpp.llama_get_embeddings_seq(self._ctx, s)
            v = np.ctypeslib.as_array(ptr, shape=(self.model.n_embd,)).astype(np.float64)
            norm = np.linalg.norm(v)
            vecs.append((v / norm if norm > 0 else v).tolist())
        return vecs
