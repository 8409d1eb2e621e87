"""llamaq's inference engine: continuous batching with shared-prefix KV reuse
on llama-cpp-python's low-level API. Imports nothing from jobs/, api/, cli/.

    engine = Engine(EngineConfig(model_path=None))   # None: the default model
    handle = engine.submit(Request("Hello", SamplingParams(max_tokens=16)))
    for delta in handle: ...                          # text as it is decoded
    result = handle.result()                          # Result(text, finish_reason, usage, timings)
    engine.embed(["a", "b"]) -> list of L2-normalised vectors
    engine.close()
"""

from . import amx_guard
from .config import EngineConfig, default_model_path
from .engine import Engine
from .errors import EngineDead, EngineError, InvalidRequest, ModelLoadError, PromptTooLong, QueueFull, RequestFailed
from .handle import Handle
from .types import Constraint, EngineStats, Request, Result, SamplingParams, Timings, Usage

amx_guard.apply()

__all__ = ["Constraint", "Engine", "EngineConfig", "EngineDead", "EngineError", "EngineStats", "Handle",
           "InvalidRequest", "ModelLoadError", "PromptTooLong", "QueueFull", "Request", "RequestFailed", "Result",
           "SamplingParams", "Timings", "Usage", "default_model_path"]
