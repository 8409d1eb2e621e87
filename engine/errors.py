"""Errors the engine raises to callers. All derive from EngineError."""


class EngineError(Exception):
    """Base class for engine errors."""


class InvalidRequest(EngineError, ValueError):
    """The request itself is wrong (bad parameter, prompt too long, bad schema).

    param names the offending field where there is one."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class PromptTooLong(InvalidRequest):
    def __init__(self, n_prompt: int, n_limit: int):
        super().__init__(
            f"prompt is {n_prompt} tokens, longer than the context allows ({n_limit} tokens)",
            param="prompt",
        )
        self.n_prompt = n_prompt
        self.n_limit = n_limit


class InvalidConfig(EngineError, ValueError):
    """An engine setting that cannot work; param names it."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


class QueueFull(EngineError):
    """The engine's waiting queue is full: retry later."""


class ModelLoadError(EngineError):
    """The model file is missing or unreadable."""


class EngineDead(EngineError):
    """The engine thread stopped; no further requests can run."""


class RequestFailed(EngineError):
    """A request failed inside the engine; the message says why."""
