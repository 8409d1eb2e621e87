"""The document model shared by every format: translatable segments plus the
verbatim text around them.

A Document is a list of parts: plain strings (kept byte-for-byte) and Slots.
A Slot renders one or more segments back into the file's own syntax (escaping,
quoting, line prefixes). When every segment of a slot maps to its own text the
slot's original raw text is written, so the identity render is exact.

An encoder raises UnsafeTranslation for a translation it cannot write without
changing the file's structure; Format.render then keeps the source for that
slot. Format.skeleton(text) is the structure a translation must keep;
Format.render also rejects, by bisection, the slots whose translation changes it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

_LETTER = re.compile(r"[^\W\d_]")
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\n|\r)|[^\r\n]+$")


_CHANGES = "translation changes the document structure"


class UnsafeTranslation(ValueError):
    """A translation that cannot be written into the file's syntax safely
    (it would change the document's structure). The source text is kept."""


def has_letters(text: str) -> bool:
    return bool(_LETTER.search(text))


def translatable(text: str, markup: str = "text") -> bool:
    """Has letters outside placeholders, code and URLs."""
    from jobs.placeholders import without_placeholders

    return has_letters(without_placeholders(text, markup))


@dataclass
class Segment:
    """One translatable unit. markup says which inline syntax it carries
    ("text", "md" or "html") so placeholders can protect it."""

    text: str
    markup: str = "text"
    note: str = ""  # where it came from (key path, msgctxt, "heading"), for reports


@dataclass
class Slot:
    ids: tuple[int, ...]
    raw: str
    encode: Callable[..., str]  # encode(*translations) -> file text
    check: Callable[[str], bool] | None = None  # a quick local structure check of encode's output


@dataclass
class Document:
    segments: list[Segment] = field(default_factory=list)
    parts: list[str | Slot] = field(default_factory=list)

    # -- building --
    def keep(self, text: str) -> None:
        if text:
            self.parts.append(text)

    def add(self, text: str, raw: str | None = None, encode: Callable[[str], str] | None = None,
            markup: str = "text", note: str = "", check: Callable[[str], bool] | None = None) -> None:
        """One segment in one slot; raw defaults to text, encode to identity."""
        i = len(self.segments)
        self.segments.append(Segment(text, markup, note))
        self.parts.append(Slot((i,), text if raw is None else raw, encode or (lambda t: t), check))

    def add_multi(self, texts: Sequence[str], raw: str, encode: Callable[..., str],
                  markup: str = "text", note: str = "") -> None:
        start = len(self.segments)
        self.segments.extend(Segment(t, markup, note) for t in texts)
        self.parts.append(Slot(tuple(range(start, len(self.segments))), raw, encode))

    def add_text(self, text: str, markup: str = "text", note: str = "",
                 encode: Callable[[str], str] | None = None) -> None:
        """text with its surrounding whitespace kept verbatim; a segment only
        when it has letters."""
        core = text.strip()
        if not core or not translatable(core, markup):
            self.keep(text)
            return
        start = text.index(core)
        self.keep(text[:start])
        enc = encode or (lambda t: t)
        if "\r\n" in core:  # the model sees \n; the file gets its own line endings back
            self.add(core.replace("\r\n", "\n"), raw=core, markup=markup, note=note,
                     encode=lambda t: enc(t.replace("\r\n", "\n")).replace("\n", "\r\n"))
        else:
            self.add(core, encode=enc, markup=markup, note=note)
        self.keep(text[start + len(core):])

    def extend(self, other: "Document") -> None:
        """Append another document's parts (its segment ids shifted)."""
        shift = len(self.segments)
        self.segments.extend(other.segments)
        for p in other.parts:
            if isinstance(p, Slot):
                p = replace(p, ids=tuple(i + shift for i in p.ids))
            self.parts.append(p)

    # -- rendering --
    def render(self, translations: Sequence[str] | None = None) -> str:
        if translations is None:
            translations = [s.text for s in self.segments]
        if len(translations) != len(self.segments):
            raise ValueError(f"{len(translations)} translations for {len(self.segments)} segments")
        out = []
        for p in self.parts:
            if isinstance(p, str):
                out.append(p)
                continue
            ts = [translations[i] for i in p.ids]
            if all(t == self.segments[i].text for t, i in zip(ts, p.ids)):
                out.append(p.raw)
            else:
                out.append(p.encode(*ts))
        return "".join(out)


@dataclass
class Rendered:
    text: str
    rejected: dict[int, str] = field(default_factory=dict)  # segment index -> why its source was kept


class Format:
    """A document format. Subclasses set name and suffixes and implement parse
    and skeleton."""

    name: str = ""
    suffixes: tuple[str, ...] = ()

    def parse(self, text: str) -> Document:
        raise NotImplementedError

    def skeleton(self, text: str) -> object:
        """The structure of a file that translation must keep (comparable with ==)."""
        raise NotImplementedError

    def render(self, doc: Document, translations: Sequence[str]) -> Rendered:
        """doc rendered with translations; a slot whose translation cannot be
        encoded, or that changes the skeleton, keeps its source text."""
        ts = list(translations)
        if len(ts) != len(doc.segments):
            raise ValueError(f"{len(ts)} translations for {len(doc.segments)} segments")
        rejected: dict[int, str] = {}
        written: dict[int, str] = {}  # part index -> the slot's encoded translation

        def reject(p: Slot, why: str) -> None:  # the slot keeps its source: its changed segments failed
            rejected.update((i, why) for i in p.ids if ts[i] != doc.segments[i].text)
        for k, p in enumerate(doc.parts):
            if not isinstance(p, Slot) or all(ts[i] == doc.segments[i].text for i in p.ids):
                continue
            try:
                out = p.encode(*(ts[i] for i in p.ids))
            except UnsafeTranslation as e:
                reject(p, f"unsafe translation: {e}")
                continue
            if p.check and not p.check(out):
                reject(p, _CHANGES)
            else:
                written[k] = out

        def compose(slots: list[int]) -> str:
            chosen = set(slots)
            return "".join(p if isinstance(p, str) else written[k] if k in chosen else p.raw
                           for k, p in enumerate(doc.parts))

        want = self.skeleton(compose([]))
        accepted: list[int] = []

        def settle(group: list[int]) -> None:
            """Accept the slots of group that keep the skeleton (bisection)."""
            if not group:
                return
            if self.skeleton(compose(accepted + group)) == want:
                accepted.extend(group)
            elif len(group) == 1:
                reject(doc.parts[group[0]], _CHANGES)
            else:
                settle(group[: len(group) // 2])
                settle(group[len(group) // 2:])

        settle(list(written))
        return Rendered(compose(accepted), rejected)


def split_lines(text: str) -> list[str]:
    """Lines with their endings (\\n, \\r\\n or \\r) attached."""
    return _LINE.findall(text)


def line_runs(text: str, is_blank: Callable[[str], bool]) -> list[list[str]]:
    """Runs of consecutive non-blank lines; runs of blank lines are runs of their own."""
    runs: list[list[str]] = []
    cur: list[str] = []
    for line in split_lines(text):
        if cur and is_blank(line) != is_blank(cur[0]):
            runs.append(cur)
            cur = []
        cur.append(line)
    if cur:
        runs.append(cur)
    return runs


def line_ending(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"
