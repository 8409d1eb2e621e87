"""Errors the engine raises to callers. All derive from EngineError; param names
the offending field or setting where there is one."""


class EngineError(Exception):
    def __init__(self, message: str = "", param: str | None = None):
        super().__init__(message)
        self.param = param


class InvalidRequest(EngineError, ValueError):
    """The request itself is wrong (bad parameter, prompt too long, bad schema)."""


class PromptTooLong(InvalidRequest):
    def __init__(self, n_prompt: int, n_limit: int):
        super().__init__(f"prompt is {n_prompt} tokens, longer than the context allows ({n_limit} tokens)", "prompt")
        self.n_prompt, self.n_limit = n_prompt, n_limit


class InvalidConfig(EngineError, ValueError):
    """An engine setting that cannot work."""


class QueueFull(EngineError):
    """The engine's waiting queue is full: retry later."""


class ModelLoadError(EngineError):
    """The model file is missing or unreadable."""


class EngineDead(EngineError):
    """The engine thread stopped; no further requests can run."""


class RequestFailed(EngineError):
    """A request failed inside the engine; the message says why."""
