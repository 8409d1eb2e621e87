"""Prompts. The shared instructions (and glossary, and examples) come FIRST and
the segment LAST, so every prompt of a run shares one long prefix that the
engine computes once and reuses from its KV cache."""

from __future__ import annotations

from dataclasses import dataclass

from . import languages
from .glossary import Glossary

PROMPT_VERSION = "1"  # part of the translation-memory key: bump when prompts change


@dataclass
class Prompt:
    """Either chat messages (for a chat template) or plain text (a base model)."""

    messages: list[dict] | None
    text: str | None
    stop: list[str]


@dataclass
class PromptBuilder:
    src: str | None
    tgt: str
    glossary: Glossary
    style: str  # "chat" or "base"

    @property
    def src_name(self) -> str:
        return languages.name(self.src) if self.src else "the source language"

    @property
    def tgt_name(self) -> str:
        return languages.name(self.tgt)

    def instructions(self) -> str:
        src = f"from {self.src_name} " if self.src else ""
        lines = [
            f"Translate the text {src}into {self.tgt_name}.",
            "Reply with the translation only: no explanations, notes, quotes or the original text.",
            "Keep exactly as they are: placeholders like {name}, {{name}}, %s, %d, %(name)s, $1 and :emoji:, "
            "markers like ⟦1⟧, HTML tags, Markdown syntax, and line breaks. Do not translate code or URLs.",
        ]
        if self.glossary.terms:
            lines.append("Always translate these terms as given:\n" + self.glossary.prompt_lines())
        return "\n".join(lines)

    def build(self, text: str, must_keep: list[str] | None = None) -> Prompt:
        """must_keep: placeholders a first attempt lost; named in a retry."""
        reminder = ""
        if must_keep:
            reminder = "\n(Keep these unchanged in the translation: " + " ".join(must_keep) + ")"
        if self.style == "chat":
            return Prompt([{"role": "system", "content": self.instructions()},
                           {"role": "user", "content": text + reminder}], None, [])
        return Prompt(None, self._base_text(text) if not reminder else self._base_text(text, reminder), self._stops(text))

    # -- base models: few-shot plain text, ending where the translation begins --
    def _labels(self) -> tuple[str, str]:
        return (self.src_name if self.src else "Text"), self.tgt_name

    def _base_text(self, text: str, reminder: str = "") -> str:
        s_label, t_label = self._labels()
        shots = []
        src_ex = languages.examples(self.src or "en")
        tgt_ex = languages.examples(self.tgt)
        if src_ex and tgt_ex and src_ex is not tgt_ex:
            shots = [f"{s_label}: {a}\n{t_label}: {b}\n\n" for a, b in zip(src_ex, tgt_ex)]
        head = self.instructions() + "\n\n" + "".join(shots)
        return f"{head}{s_label}: {text}{reminder}\n{t_label}:"

    def _stops(self, text: str) -> list[str]:
        s_label, _ = self._labels()
        if "\n" in text:  # a multi-line segment ends at a blank line or the next example
            return ["\n\n", f"\n{s_label}:"]
        return ["\n"]
