"""Prompts. The shared instructions (and glossary, and examples) come FIRST and
the segment LAST, so every prompt of a run shares one long prefix that the
engine computes once and reuses from its KV cache."""

from __future__ import annotations

from dataclasses import dataclass

from . import languages
from .glossary import Glossary
from .verify import Leaks

PROMPT_VERSION = "2"  # part of the translation-memory key: bump when prompts change


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
            "Numbered tags like <1>...</1> mark words: keep each pair around the translation of its words; "
            "keep <2/> tags where they belong.",
        ]
        if self.glossary.terms:
            lines.append("Always translate these terms as given:\n" + self.glossary.prompt_lines())
        return "\n".join(lines)

    def build(self, text: str, variant: int = 0) -> Prompt:
        """variant 0: the instructions, then worked examples as earlier turns
        (chat) or few-shot pairs (base); variant 1, for a retry: the instructions
        alone (chat), or the examples alone (base). A retry never adds words
        next to the segment: a model copies whatever sits there."""
        if self.style == "chat":
            msgs = [{"role": "system", "content": self.instructions()}]
            if not variant:
                for a, b in self._pairs():
                    msgs += [{"role": "user", "content": a}, {"role": "assistant", "content": b}]
            return Prompt(msgs + [{"role": "user", "content": text}], None, [])
        return Prompt(None, self._base_text(text, with_instructions=not variant), self._stops(text))

    def leaks(self) -> Leaks:
        """Everything this builder shows a model besides the segment."""
        lines = self.instructions().split("\n")
        return Leaks(labels=list(dict.fromkeys(self._labels())), lines=lines, pairs=self._pairs(),
                     literals=["=>"] if self.glossary.terms else [])

    # -- base models: few-shot plain text, ending where the translation begins --
    def _labels(self) -> tuple[str, str]:
        return (self.src_name if self.src else "Text"), self.tgt_name

    def _pairs(self) -> list[tuple[str, str]]:
        src_ex = languages.examples(self.src or "en")
        tgt_ex = languages.examples(self.tgt)
        if src_ex and tgt_ex and src_ex is not tgt_ex:
            return list(zip(src_ex, tgt_ex))
        return []

    def _base_text(self, text: str, with_instructions: bool = True) -> str:
        s_label, t_label = self._labels()
        shots = "".join(f"{s_label}: {a}\n{t_label}: {b}\n\n" for a, b in self._pairs())
        head = (self.instructions() + "\n\n") if with_instructions or not shots else ""
        return f"{head}{shots}{s_label}: {text}\n{t_label}:"

    def _stops(self, text: str) -> list[str]:
        """Where a translation ends: at the next example's label (either one: a
        base model may start a new turn with either), at a blank line unless
        the segment has one, and at a line break for a one-line segment."""
        stops = [f"\n{label}:" for label in dict.fromkeys(self._labels())]
        if "\n" not in text:
            return ["\n"] + stops
        if "\n\n" not in text:
            stops.append("\n\n")
        return stops
