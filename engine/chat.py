"""Chat messages to prompt text: the model's Jinja2 template, or a plain fallback.

Fallback (models with no chat template, such as the default Gemma 3 270M base):

    <system content>

    User: <content>
    Assistant: <content>
    User: <content>
    Assistant:

and generation stops at the next "\\nUser:" line (FALLBACK_STOP)."""

from __future__ import annotations

import logging
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import InvalidRequest
from .model import Model

log = logging.getLogger("llamaq.engine")

FALLBACK_STOP = ["\nUser:"]
_ROLES = {"system", "developer", "user", "assistant", "tool"}


def _content_text(message: dict, index: int) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: only text parts are supported
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidRequest(
                    f"messages[{index}].content: only text content parts are supported", param=f"messages[{index}].content"
                )
            parts.append(part["text"])
        return "".join(parts)
    raise InvalidRequest(f"messages[{index}].content must be a string or a list of parts", param=f"messages[{index}].content")


def normalise(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty list", param="messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise InvalidRequest(f"messages[{i}] must be an object", param=f"messages[{i}]")
        role = m.get("role")
        if role not in _ROLES:
            raise InvalidRequest(f"messages[{i}].role must be one of {sorted(_ROLES)}, got {role!r}", param=f"messages[{i}].role")
        out.append({"role": "system" if role == "developer" else role, "content": _content_text(m, i)})
    return out


def render_fallback(messages: list[dict[str, str]]) -> str:
    parts = []
    for m in messages:
        if m["role"] == "system":
            parts.append(m["content"].strip() + "\n\n")
        elif m["role"] == "assistant":
            parts.append(f"Assistant: {m['content']}\n")
        else:
            parts.append(f"User: {m['content']}\n")
    parts.append("Assistant:")
    return "".join(parts)


class ChatTemplate:
    def __init__(self, source: str, bos_token: str, eos_token: str):
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = self._raise
        self._template = env.from_string(source)
        self._bos, self._eos = bos_token, eos_token

    @staticmethod
    def _raise(message: str) -> None:
        raise InvalidRequest(f"chat template: {message}", param="messages")

    def render(self, messages: list[dict[str, str]]) -> str:
        try:
            return self._template.render(
                messages=messages, add_generation_prompt=True, bos_token=self._bos, eos_token=self._eos
            )
        except jinja2.TemplateError as e:
            raise InvalidRequest(f"chat template failed: {e}", param="messages") from e


def load_template(model: Model) -> ChatTemplate | None:
    """The model's own chat template, or None (it has none, or one that does not compile)."""
    source = model.chat_template()
    if not source:
        return None
    bos = model.token_bytes(model.bos, special=True).decode("utf-8", "replace")
    eos_id = model.eog_tokens[0] if model.eog_tokens else -1
    eos = model.token_bytes(eos_id, special=True).decode("utf-8", "replace") if eos_id >= 0 else ""
    try:
        return ChatTemplate(source, bos, eos)
    except Exception as e:  # a broken template falls back rather than breaking the model
        log.warning("chat template unusable (%s); using the plain-text fallback", e)
        return None
