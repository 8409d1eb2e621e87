"""Writes a tiny random-weight GGUF that uses the default model's real tokenizer.

A llama-architecture model, a couple of layers, tiny width: loads and decodes
in milliseconds, so engine tests run in seconds. f32 by default, because
llama.cpp's CPU kernels are then batch-invariant (exact-identity tests).
arch="gemma3" with n_swa writes a Gemma-3 model whose layers all use a sliding
window of n_swa tokens (its 6th layers would be global; it has fewer)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

VERSION = 1
_TOKENIZER_KEYS = (
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_eos_token",
    "tokenizer.ggml.add_space_prefix",
)


def _read_tokenizer(source: Path) -> dict:
    import gguf

    reader = gguf.GGUFReader(source)
    f = reader.fields
    return {
        "model": f["tokenizer.ggml.model"].contents(),
        "pre": f["tokenizer.ggml.pre"].contents(),
        "tokens": f["tokenizer.ggml.tokens"].contents(),
        "scores": f["tokenizer.ggml.scores"].contents(),
        "types": f["tokenizer.ggml.token_type"].contents(),
        "scalars": {k: f[k].contents() for k in _TOKENIZER_KEYS if k in f},
    }


def _add_tokenizer(w, tok: dict) -> None:
    w.add_tokenizer_model(tok["model"])
    w.add_tokenizer_pre(tok["pre"])
    w.add_token_list(tok["tokens"])
    w.add_token_scores(tok["scores"])
    w.add_token_types(tok["types"])
    for key, value in tok["scalars"].items():  # ids as uint32, add_* flags as bool, as gguf's own add_* methods
        (w.add_bool if isinstance(value, bool) else w.add_uint32)(key, value)


def write_tokenizer_only(path: Path, source: Path) -> Path:
    """A GGUF holding only source's tokenizer (~6 MB for Gemma 3): write_tiny_model's
    source where the real model is too big to carry (scripts/gpu_prep.sh)."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    _add_tokenizer(w, _read_tokenizer(source))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_tiny_model(
    path: Path,
    source: Path,
    *,
    n_embd: int = 64,
    n_layer: int = 2,
    n_head: int = 4,
    n_head_kv: int = 2,
    n_ff: int = 128,
    n_ctx_train: int = 8192,
    dtype: str = "f32",
    seed: int = 0,
    arch: str = "llama",
    n_swa: int = 0,
) -> Path:
    import gguf

    tok = _read_tokenizer(source)
    n_vocab = len(tok["tokens"])
    rng = np.random.default_rng(seed)
    np_dtype = np.float32 if dtype == "f32" else np.float16
    head_dim = n_embd // n_head

    def rand(*shape: int, scale: float) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * scale).astype(np_dtype)

    tmp = path.with_suffix(".tmp")
    w = gguf.GGUFWriter(str(tmp), arch)
    w.add_name("llamaq-tiny-random")
    w.add_context_length(n_ctx_train)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    if arch == "gemma3":
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
        w.add_sliding_window(n_swa)
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    _add_tokenizer(w, tok)

    # Norm weights stay f32 (llama.cpp expects that); matrices in the chosen dtype.
    # Gemma scales embeddings by sqrt(n_embd) and normalises each attention output:
    # unit-RMS embeddings keep attention (what a missing KV cell changes) as strong as the token.
    emb_scale = 1 / np.sqrt(n_embd) if arch == "gemma3" else 1.0
    w.add_tensor("token_embd.weight", rand(n_vocab, n_embd, scale=emb_scale))
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    w.add_tensor("output.weight", rand(n_vocab, n_embd, scale=2.0 / np.sqrt(n_embd)))
    kv_dim = head_dim * n_head_kv
    for i in range(n_layer):
        p = f"blk.{i}."
        if arch == "gemma3":
            for name, size in (("attn_q_norm", head_dim), ("attn_k_norm", head_dim),
                               ("post_attention_norm", n_embd), ("post_ffw_norm", n_embd)):
                w.add_tensor(p + name + ".weight", np.ones(size, dtype=np.float32))
        w.add_tensor(p + "attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(p + "attn_q.weight", rand(n_embd, n_embd, scale=1 / np.sqrt(n_embd)))
        w.add_tensor(p + "attn_k.weight", rand(kv_dim, n_embd, scale=1 / np.sqrt(n_embd)))
        w.add_tensor(p + "attn_v.weight", rand(kv_dim, n_embd, scale=1 / np.sqrt(n_embd)))
        w.add_tensor(p + "attn_output.weight", rand(n_embd, n_embd, scale=1 / np.sqrt(n_embd)))
        w.add_tensor(p + "ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(p + "ffn_gate.weight", rand(n_ff, n_embd, scale=1 / np.sqrt(n_embd)))
        w.add_tensor(p + "ffn_up.weight", rand(n_ff, n_embd, scale=1 / np.sqrt(n_embd)))
        w.add_tensor(p + "ffn_down.weight", rand(n_embd, n_ff, scale=1 / np.sqrt(n_ff)))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, path)
    return path


def cached_tiny_model(dtype: str = "f32", cache_dir: Path | None = None, arch: str = "llama", n_swa: int = 0) -> Path:
    """The tiny model, written once per machine into ~/.cache/llamaq (or cache_dir)."""
    from engine.config import bundled_model_path

    cache_dir = cache_dir or Path(os.environ.get("LLAMAQ_CACHE", Path.home() / ".cache" / "llamaq"))
    cache_dir.mkdir(parents=True, exist_ok=True)
    variant = "" if arch == "llama" else f"-{arch}-swa{n_swa}"
    path = cache_dir / f"tiny-random-v{VERSION}{variant}-{dtype}.gguf"
    if not path.exists():
        write_tiny_model(path, bundled_model_path(), dtype=dtype, arch=arch, n_swa=n_swa)
    return path
