"""SubRip (.srt) and WebVTT (.vtt): one segment per cue, cue text only.
Numbering, identifiers, timings, settings, NOTE/STYLE/REGION blocks and
override codes at the start of a cue ({\\an8}) are verbatim. A translation
never gets a blank line (it would end the cue) nor "-->" (a timing line):
VTT escapes it, SRT cannot, so the cue keeps its source."""

from __future__ import annotations

import re

from .base import Document, Format, UnsafeTranslation, line_runs, translatable
from .html import stray_escaper

_BLANK = re.compile(r"^[ \t]*(\r\n|\n|\r)?$")
_LEADING_CODES = re.compile(r"^(?:\{\\[^{}]*\})+")
_CODES = re.compile(r"\{\\[^{}]*\}|</?[A-Za-z][^<>]*>|<\d[\d:.]*>")


def _blocks(text: str) -> list[list[str]]:
    """Consecutive non-blank lines; blank lines form their own blocks (kept verbatim)."""
    return line_runs(text, lambda line: bool(_BLANK.match(line)))


def _cue_text(doc: Document, lines: list[str], note: str, vtt: bool) -> None:
    """The cue's text lines as one segment; leading override codes and the
    final line ending verbatim. VTT escapes "-->" and a "<" or "&" that is not
    one of the cue's own tags; SRT has no escapes: "-->" cannot be written."""
    raw = "".join(lines)
    body = raw.rstrip("\r\n")
    codes = _LEADING_CODES.match(body)
    lead = codes.group(0) if codes else ""
    body = body[len(lead):]
    ending = raw[len(lead) + len(body):]
    if not translatable(body):
        doc.keep(raw)
        return
    eol = "\r\n" if "\r\n" in raw else "\n"
    escape = stray_escaper(_CODES.findall(body))
    text = body.replace("\r\n", "\n").replace("\r", "\n")

    def encode(t: str) -> str:
        lines_ = [ln.strip() for ln in t.replace("\r\n", "\n").replace("\r", "\n").split("\n") if ln.strip()]
        if not lines_:
            raise UnsafeTranslation("empty cue text")
        out = eol.join(lines_)
        if vtt:
            return escape(out)
        if "-->" in out:
            raise UnsafeTranslation("'-->' in cue text would read as a timing line")
        return out

    doc.keep(lead)
    doc.add(text, raw=body, encode=encode, note=note)
    doc.keep(ending)


def cue_skeleton(text: str) -> list[tuple]:
    """Per block: a cue's lines up to its timing, the number of timing arrows,
    its override codes and tags; other blocks whole. Blank lines dropped."""
    out = []
    for block in _blocks(text):
        if _BLANK.match(block[0]):
            continue
        timing = next((i for i, ln in enumerate(block) if "-->" in ln), None)
        if timing is None:
            out.append(("block", "".join(block).strip()))
            continue
        rest = "".join(block[timing + 1:])
        out.append(("cue", tuple(ln.strip() for ln in block[: timing + 1]), rest.count("-->"),
                    tuple(_CODES.findall(rest)), bool(rest.strip())))
    return out


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
            _cue_text(doc, block[timing + 1:], note=block[0].strip(), vtt=False)
        return doc

    def skeleton(self, text: str) -> list[tuple]:
        return cue_skeleton(text)


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
            _cue_text(doc, block[timing + 1:], note=block[timing].split("-->")[0].strip(), vtt=True)
        return doc

    def skeleton(self, text: str) -> list[tuple]:
        return cue_skeleton(text)
