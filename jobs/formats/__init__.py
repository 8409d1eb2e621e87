"""Document formats for translation: parse a file into segments plus verbatim
text, render it back from one translation per segment.

    fmt = format_for("docs/intro.md")            # by suffix; ValueError if unknown
    doc = fmt.parse(text)
    doc.segments                                  # [Segment(text, markup, note)]
    doc.render([t.upper() for t in ...])          # same structure, new text
    doc.render()                                  # identity: the input, byte for byte
"""

from __future__ import annotations

from pathlib import Path

from .base import Document, Format, Segment, Slot
from .html import HtmlFormat
from .jsonfmt import JsonFormat
from .markdown import MarkdownFormat
from .po import PoFormat
from .subtitles import SrtFormat, VttFormat
from .text import TextFormat

FORMATS: dict[str, Format] = {
    f.name: f
    for f in (TextFormat(), MarkdownFormat(), SrtFormat(), VttFormat(), PoFormat(), JsonFormat(), HtmlFormat())
}
_BY_SUFFIX = {suf: f for f in FORMATS.values() for suf in f.suffixes}


def format_for(path: str | Path) -> Format:
    """The format for a file name, by its (case-insensitive) suffix."""
    suffix = Path(path).suffix.lower()
    try:
        return _BY_SUFFIX[suffix]
    except KeyError:
        raise ValueError(
            f"no translation format for {str(path)!r} (suffix {suffix or 'none'}); "
            f"supported: {', '.join(sorted(_BY_SUFFIX))}"
        ) from None


def format_named(name: str) -> Format:
    try:
        return FORMATS[name.lower().lstrip(".")]
    except KeyError:
        raise ValueError(f"unknown format {name!r}; choose one of {', '.join(FORMATS)}") from None


def supported_suffixes() -> list[str]:
    return sorted(_BY_SUFFIX)


__all__ = ["Document", "Format", "Segment", "Slot", "FORMATS", "format_for", "format_named",
           "supported_suffixes"]
