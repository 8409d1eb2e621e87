"""Plain text: one segment per paragraph (blank-line separated)."""

from __future__ import annotations

import re

from .base import Document, Format

_PARA_SPLIT = re.compile(r"((?:[ \t]*(?:\r\n|\n|\r)){2,})")


class TextFormat(Format):
    name = "txt"
    suffixes = (".txt", ".text")

    def parse(self, text: str) -> Document:
        doc = Document()
        for i, chunk in enumerate(_PARA_SPLIT.split(text)):
            if i % 2:
                doc.keep(chunk)
            else:
                doc.add_text(chunk, encode=_no_blank_lines)
        return doc

    def skeleton(self, text: str) -> int:
        """The number of paragraphs."""
        return sum(1 for i, c in enumerate(_PARA_SPLIT.split(text)) if i % 2 == 0 and c.strip())


def _no_blank_lines(t: str) -> str:
    """A translation must not split its paragraph in two."""
    return re.sub(r"\n\s*\n", "\n", t)
