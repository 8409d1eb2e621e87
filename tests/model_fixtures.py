"""Model fixtures: the tiny random-weight test model and the default model."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiny_model import cached_tiny_model


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    """f32 tiny model with the default model's tokenizer (batch-invariant numerics)."""
    return cached_tiny_model("f32")


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    from engine.config import bundled_model_path

    return bundled_model_path()


def tiny_config(model_path: Path, **overrides):
    """Engine settings for the tiny model. One thread: llama.cpp's spinning thread
    pool collapses when the cores are shared with worker processes and other tests.
    Flash attention off: on the CPU it changes logits with the batch shape (measured
    3.5e-4 on this model, enough to flip near-tied greedy picks); without it f32
    logits differ by at most ~4e-6 between a lone and a batched run."""
    from engine import EngineConfig

    return EngineConfig(**{"model_path": model_path, "n_threads": 1, "flash_attn": False, **overrides})


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_path):
    """A shared engine on the tiny model, for tests that don't need their own."""
    from engine import Engine

    eng = Engine(tiny_config(tiny_model_path, n_ctx=8192, n_parallel=16, n_batch=256))
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def default_engine(default_model_path):
    from engine import Engine, EngineConfig

    eng = Engine(EngineConfig(model_path=default_model_path, n_ctx=8192, n_parallel=8))
    yield eng
    eng.close()
