"""Chat messages to prompt text: the model's Jinja2 template, or a plain fallback.

    chat = chat_for(engine)              # made once per loaded model
    prompt = chat.render(messages)       # raises InvalidRequest naming the message
    stop = chat.stop                     # the fallback's turn marker, or []

Fallback (models with no chat template, such as the default Gemma 3 270M base):

    <system content>

    User: <content>
    Assistant: <content>
    User: <content>
    Assistant:

and generation stops at the next "\\nUser:" line (FALLBACK_STOP)."""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine import Engine, EngineDead, InvalidRequest
from engine.model import Model

log = logging.getLogger("llamaq.jobs")

FALLBACK_STOP = ["\nUser:"]
_ROLES = {"system", "developer", "user", "assistant", "tool"}


def _content_text(message: dict, index: int) -> str:
    content, param = message.get("content"), f"messages[{index}].content"
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise InvalidRequest(f"{param} must be a string or a list of parts", param=param)
    # OpenAI content parts: only text parts are supported
    if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
        raise InvalidRequest(f"{param}: only text content parts are supported", param=param)
    return "".join(p["text"] for p in content)


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
    parts = [m["content"].strip() + "\n\n" if m["role"] == "system"
             else f"{'Assistant' if m['role'] == 'assistant' else 'User'}: {m['content']}\n" for m in messages]
    return "".join(parts) + "Assistant:"


def _raise_exception(message: str) -> None:
    raise InvalidRequest(f"chat template: {message}", param="messages")


class ChatTemplate:
    def __init__(self, source: str, bos_token: str, eos_token: str):
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals.update(raise_exception=_raise_exception, bos_token=bos_token, eos_token=eos_token)
        self._template = env.from_string(source)

    def render(self, messages: list[dict[str, str]]) -> str:
        try:
            return self._template.render(messages=messages, add_generation_prompt=True)
        except jinja2.TemplateError as e:
            raise InvalidRequest(f"chat template failed: {e}", param="messages") from e


def load_template(model: Model) -> ChatTemplate | None:
    """The model's own chat template, or None (it has none, or one that does not compile)."""
    source = model.chat_template()
    if not source:
        return None
    text = lambda t: model.token_bytes(t, special=True).decode("utf-8", "replace")  # noqa: E731
    try:
        return ChatTemplate(source, text(model.bos), text(model.eog_tokens[0]) if model.eog_tokens else "")
    except Exception as e:  # a broken template falls back rather than breaking the model
        log.warning("chat template unusable (%s); using the plain-text fallback", e)
        return None


class Chat:
    """How one model turns chat messages into prompt text."""

    def __init__(self, model: Model):
        self.template = load_template(model)

    @property
    def has_template(self) -> bool:
        return self.template is not None

    @property
    def stop(self) -> list[str]:
        """Stop strings a chat request needs (the plain-text fallback's turn marker)."""
        return [] if self.template else list(FALLBACK_STOP)

    def render(self, messages: Any) -> str:
        msgs = normalise(messages)
        return self.template.render(msgs) if self.template else render_fallback(msgs)


_chats: weakref.WeakKeyDictionary[Model, Chat] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def chat_for(engine: Engine) -> Chat:
    """The engine's chat format, loaded on first use and kept while its model lives."""
    with _lock:
        if (chat := _chats.get(engine.model)) is None:
            if engine.model.ptr is None:  # closed: reading a freed model would crash
                raise EngineDead("engine is not running: closed")
            chat = _chats[engine.model] = Chat(engine.model)
    return chat
