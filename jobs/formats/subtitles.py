"""SubRip (.srt) and WebVTT (.vtt): one segment per cue, cue text only.
Numbering, identifiers, timings, settings, NOTE/STYLE/REGION blocks are verbatim."""

from __future__ import annotations

import re

from .base import Document, Format, line_runs, translatable

_BLANK = re.compile(r"^[ \t]*(\r\n|\n|\r)?$")


def _blocks(text: str) -> list[list[str]]:
    """Consecutive non-blank lines; blank lines form their own blocks (kept verbatim)."""
    return line_runs(text, lambda line: bool(_BLANK.match(line)))


def _cue_text(doc: Document, lines: list[str], note: str) -> None:
    """The cue's text lines as one segment; its final line ending verbatim."""
    raw = "".join(lines)
    body = raw.rstrip("\r\n")
    ending = raw[len(body):]
    if not translatable(body):
        doc.keep(raw)
        return
    eol = "\r\n" if "\r\n" in raw else "\n"
    text = body.replace("\r\n", "\n").replace("\r", "\n")

    def encode(t: str) -> str:
        # a blank line would end the cue early: never write one
        lines_ = [ln.strip() for ln in t.replace("\r\n", "\n").split("\n") if ln.strip()]
        return eol.join(lines_) or "..."

    doc.add(text, raw=body, encode=encode, note=note)
    doc.keep(ending)


class SrtFormat(Format):
    name = "srt"
    suffixes = (".srt",)

    def parse(self, text: str) -> Document:
        doc = Document()
        for block in _blocks(text):
            timing = next((i for i, ln in enumerate(block) if "-->" in ln), None)
            if timing is None or timing + 1 >= len(block):
                doc.keep("".join(block))
                continue
            doc.keep("".join(block[: timing + 1]))
            _cue_text(doc, block[timing + 1:], note=block[0].strip())
        return doc


class VttFormat(Format):
    name = "vtt"
    suffixes = (".vtt",)

    def parse(self, text: str) -> Document:
        doc = Document()
        for n, block in enumerate(_blocks(text)):
            first = block[0].lstrip("\ufeff")
            if n == 0 or first.startswith(("NOTE", "STYLE", "REGION", "WEBVTT")):
                doc.keep("".join(block))
                continue
            timing = next((i for i, ln in enumerate(block[:2]) if "-->" in ln), None)
            if timing is None or timing + 1 >= len(block):
                doc.keep("".join(block))
                continue
            doc.keep("".join(block[: timing + 1]))
            _cue_text(doc, block[timing + 1:], note=block[timing].split("-->")[0].strip())
        return doc
