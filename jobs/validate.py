"""Field checks for OpenAI request bodies. Each raises JobValidationError
naming the field (dotted path, e.g. "messages.2.content")."""

from __future__ import annotations

from typing import Any

from .errors import JobValidationError


def _type_name(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def opt_number(body: dict, key: str, lo: float | None = None, hi: float | None = None) -> float | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise JobValidationError(f"'{key}' must be a number, not {_type_name(v)}", key)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise JobValidationError(f"'{key}' must be between {lo} and {hi}, got {v}", key)
    return float(v)


def opt_int(body: dict, key: str, lo: int | None = None, hi: int | None = None) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise JobValidationError(f"'{key}' must be an integer, not {_type_name(v)}", key)
    if lo is not None and v < lo:
        raise JobValidationError(f"'{key}' must be at least {lo}, got {v}", key)
    if hi is not None and v > hi:
        raise JobValidationError(f"'{key}' must be at most {hi}, got {v}", key)
    return v


def opt_bool(body: dict, key: str) -> bool | None:
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, bool):
        raise JobValidationError(f"'{key}' must be a boolean, not {_type_name(v)}", key)
    return v


def opt_str(body: dict, key: str, nonempty: bool = False) -> str | None:
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise JobValidationError(f"'{key}' must be a string, not {_type_name(v)}", key)
    if nonempty and not v:
        raise JobValidationError(f"'{key}' must not be empty", key)
    return v


def opt_dict(body: dict, key: str) -> dict | None:
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, dict):
        raise JobValidationError(f"'{key}' must be an object, not {_type_name(v)}", key)
    return v


def require(body: dict, key: str) -> Any:
    if body.get(key) is None:
        raise JobValidationError(f"'{key}' is required", key)
    return body[key]


def stop_list(body: dict) -> list[str] | None:
    v = body.get("stop")
    if v is None:
        return None
    if isinstance(v, str):
        return [v] if v else []
    if isinstance(v, list) and all(isinstance(s, str) for s in v):
        return [s for s in v if s]
    raise JobValidationError("'stop' must be a string or a list of strings", "stop")


def logit_bias(body: dict) -> dict[str, float] | None:
    v = opt_dict(body, "logit_bias")
    if v is None:
        return None
    out = {}
    for k, b in v.items():
        try:
            tok = int(k)
        except (TypeError, ValueError):
            raise JobValidationError(f"'logit_bias' keys must be token ids, got {k!r}", f"logit_bias.{k}")
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not -100 <= b <= 100:
            raise JobValidationError("'logit_bias' values must be numbers between -100 and 100",
                                     f"logit_bias.{k}")
        out[str(tok)] = float(b)
    return out


def str_or_str_list(body: dict, key: str, allow_tokens: bool = False) -> str | list:
    """A string or a non-empty list of strings (or, with allow_tokens, token id
    lists as OpenAI allows for prompt/input)."""
    v = require(body, key)
    if isinstance(v, str):
        return v
    if isinstance(v, list) and v:
        if all(isinstance(s, str) for s in v):
            return v
        if allow_tokens and all(isinstance(t, int) and not isinstance(t, bool) for t in v):
            return [v]
        if allow_tokens and all(
            isinstance(s, list) and s and all(isinstance(t, int) and not isinstance(t, bool) for t in s)
            for s in v
        ):
            return v
    what = "a string, a list of strings or token ids" if allow_tokens else "a string or a non-empty list of strings"
    raise JobValidationError(f"'{key}' must be {what}", key)
