"""A loaded GGUF model: weights, vocabulary, tokenizer, metadata, contexts."""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from pathlib import Path

import llama_cpp

from .errors import ModelLoadError

_KV_TYPES = {"f32": llama_cpp.GGML_TYPE_F32, "f16": llama_cpp.GGML_TYPE_F16, "q8_0": llama_cpp.GGML_TYPE_Q8_0}
_LOG_ERROR, _LOG_CONT = 4, 5  # ggml_log_level in this llama.cpp (llama-cpp-python's own map is off by one)
_log = {"verbose": False, "last_shown": False}


@llama_cpp.llama_log_callback
def _log_callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    """llama.cpp's log lines: errors always, the load chatter only when verbose."""
    show = _log["last_shown"] if level == _LOG_CONT else (_log["verbose"] or level >= _LOG_ERROR)
    _log["last_shown"] = show
    if show:
        sys.stderr.write(text.decode("utf-8", errors="replace"))


@functools.cache
def _init_backend() -> None:
    llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()


class Model:
    """Owns a llama_model. Tokenizer calls are thread-safe (read-only vocab)."""

    def __init__(self, path: str | Path, *, n_gpu_layers: int = 0, verbose: bool = False):
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"model file not found: {path}")
        if not os.access(path, os.R_OK):
            raise ModelLoadError(f"model file not readable: {path}")
        _log["verbose"] = verbose
        _init_backend()
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers if n_gpu_layers >= 0 else 0x7FFFFFFF
        ptr = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not ptr:
            raise ModelLoadError(f"could not load model (not a valid GGUF file?): {path}")
        self.path = path
        self.ptr = ptr
        self.vocab = llama_cpp.llama_model_get_vocab(ptr)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.n_embd = llama_cpp.llama_model_n_embd(ptr)
        self.n_ctx_train = llama_cpp.llama_model_n_ctx_train(ptr)
        self.n_swa = llama_cpp.llama_model_n_swa(ptr)
        self.eog_tokens = [t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self.vocab, t)]
        self._eog = frozenset(self.eog_tokens)
        self.bos = llama_cpp.llama_vocab_bos(self.vocab)
        # Recurrent state cannot be cut at an arbitrary position, so prefixes can't be shared.
        self.can_share_prefix = not (llama_cpp.llama_model_is_recurrent(ptr) or llama_cpp.llama_model_is_hybrid(ptr))
        self._pieces: dict[int, bytes] = {}

    @property
    def name(self) -> str:
        return self.path.stem

    def close(self) -> None:
        if self.ptr:
            llama_cpp.llama_model_free(self.ptr)
            self.ptr = None

    # -- metadata --
    def chat_template(self) -> str | None:
        tmpl = llama_cpp.llama_model_chat_template(self.ptr, None)
        return tmpl.decode("utf-8", errors="replace") if tmpl else None

    # -- tokenizer --
    def is_eog(self, token: int) -> bool:
        return token in self._eog

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        n_max = len(data) + 8
        buf = (llama_cpp.llama_token * n_max)()
        n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, n_max, add_special, parse_special)
        if n < 0:
            buf = (llama_cpp.llama_token * -n)()
            n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, -n, add_special, parse_special)
        return list(buf[:n])

    def token_bytes(self, token: int, special: bool = False) -> bytes:
        """The raw bytes of one token (may be part of a UTF-8 character)."""
        if special:
            return self._token_bytes(token, True)
        if (piece := self._pieces.get(token)) is None:
            piece = self._pieces[token] = self._token_bytes(token, False)
        return piece

    def _token_bytes(self, token: int, special: bool) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self.token_bytes(t) for t in tokens).decode("utf-8", errors="replace")

    # -- contexts --
    def new_context(self, *, n_ctx: int, n_batch: int, n_seq_max: int, n_threads: int | None = None,
                    embeddings: bool = False, swa_full: bool = True, flash_attn: bool | None = None,
                    kv_type: str = "f16") -> llama_cpp.llama_context_p:
        p = llama_cpp.llama_context_default_params()
        p.n_ctx, p.n_batch, p.n_ubatch, p.n_seq_max = n_ctx, n_batch, n_batch, n_seq_max
        cores = os.cpu_count() or 1
        # llama.cpp uses n_threads for one-token batches and n_threads_batch for
        # larger ones; a lone decode step is too small to gain from every core
        # (llama-cpp-python's default split, measured faster here too).
        p.n_threads = n_threads or max(1, cores // 2)
        p.n_threads_batch = n_threads or cores
        p.kv_unified = True  # seq_cp then shares cells across sequences instead of copying
        p.swa_full = swa_full
        p.no_perf = True
        p.type_k = p.type_v = _KV_TYPES[kv_type]
        if flash_attn is not None:
            p.flash_attn_type = 1 if flash_attn else 0
        if embeddings:
            p.embeddings = True
            p.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_MEAN
        ctx = llama_cpp.llama_init_from_model(self.ptr, p)
        if not ctx:
            raise ModelLoadError(f"could not create a context for {self.path} (n_ctx={n_ctx})")
        return ctx
