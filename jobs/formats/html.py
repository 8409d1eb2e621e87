"""HTML: text and the alt/title (and placeholder/aria-label) attributes only.

Runs of text and inline elements (<b>, <a href>, <em>, ...) form one segment so
a sentence is translated whole; its tags are placeholders the check guards.
script/style/pre/code/textarea content, comments, doctype and all other
attributes are verbatim."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from html.parser import HTMLParser

from .base import Document, Format, has_letters, translatable

INLINE = frozenset(
    "a abbr b bdi bdo big br cite img data del dfn em font i ins kbd mark q s small span strike "
    "strong sub sup time tt u var wbr".split()
)
RAW_TEXT = frozenset("script style pre textarea svg math template".split())
OPAQUE_INLINE = frozenset(("code", "kbd", "samp"))  # inside a sentence, kept whole (masked)
ATTRS = ("alt", "title", "placeholder", "aria-label")
_TAG = re.compile(r"<[A-Za-z][^<>]*>")
_OPAQUE_RE = re.compile(r"<(code|kbd|samp)\b[^>]*>.*?</\1\s*>", re.S | re.I)
_ENTITY = r"&(?:#\d+|#[xX][0-9a-fA-F]+|\w+);"
_ATTR_RE = re.compile(r"""(\s(%s)\s*=\s*)("([^"]*)"|'([^']*)'|([^\s"'=<>`]+))""" % "|".join(ATTRS), re.I)


class _Events(HTMLParser):
    """Records (offset, kind, tag) for every parser event."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.text = text
        self.line_starts = [0] + [m.end() for m in re.finditer(r"\r\n|\n|\r", text)]
        self.events: list[tuple[int, str, str]] = []

    def _at(self) -> int:
        line, col = self.getpos()
        return self.line_starts[line - 1] + col

    def handle_starttag(self, tag, attrs):
        self.events.append((self._at(), "start", tag))

    def handle_startendtag(self, tag, attrs):
        self.events.append((self._at(), "start", tag))

    def handle_endtag(self, tag):
        self.events.append((self._at(), "end", tag))

    def handle_data(self, data):
        self.events.append((self._at(), "data", ""))

    def handle_comment(self, data):
        self.events.append((self._at(), "other", ""))

    handle_decl = handle_pi = unknown_decl = handle_comment


def _attr_encode(quote_char: str):
    def enc(t: str) -> str:
        q = quote_char or '"'
        return q + html.escape(t, quote=False).replace(q, "&quot;" if q == '"' else "&#x27;") + q
    return enc


def _tag_with_attrs(doc: Document, raw: str) -> None:
    last = 0
    for m in _ATTR_RE.finditer(raw):
        value = next(v for v in m.groups()[3:] if v is not None)
        text = html.unescape(value)
        if not has_letters(text):
            continue
        doc.keep(raw[last: m.start(3)])
        q = m.group(3)[0] if m.group(3)[0] in "\"'" else ""
        doc.add(text, raw=m.group(3), encode=_attr_encode(q), note=m.group(2).lower())
        last = m.end(3)
    doc.keep(raw[last:])


def _run(doc: Document, raw: str) -> None:
    """A run of text and inline tags: one segment (html markup), whitespace verbatim.
    Inline tags in it that carry alt/title get those as segments of the same slot."""
    core = raw.strip()
    tags = [m for m in _TAG.finditer(core) if _ATTR_RE.search(m.group(0))]
    if not core or not translatable(_TAG.sub(" ", core), "html"):
        last = 0
        for m in _TAG.finditer(raw):
            if _ATTR_RE.search(m.group(0)):
                doc.keep(raw[last: m.start()])
                _tag_with_attrs(doc, m.group(0))
                last = m.end()
        doc.keep(raw[last:])
        return
    start = raw.index(core)
    doc.keep(raw[:start])
    subs = []
    for m in tags:
        sub = Document()
        _tag_with_attrs(sub, m.group(0))
        subs.append((m.group(0), sub))
    texts = [core] + [seg.text for _, sub in subs for seg in sub.segments]
    counts = [len(sub.segments) for _, sub in subs]

    opaque = [m.group(0) for m in _OPAQUE_RE.finditer(core)]
    own = re.findall(r"</?[A-Za-z][^<>]*>", _OPAQUE_RE.sub(" ", core))
    escape = stray_escaper(opaque + own)

    def encode(run_t: str, *attr_ts: str) -> str:
        run_t = escape(run_t)
        k = 0
        for (tag_raw, sub), n in zip(subs, counts):
            new_tag = sub.render(list(attr_ts[k: k + n]))
            k += n
            run_t = run_t.replace(tag_raw, new_tag, 1)
        return run_t

    doc.add_multi(texts, core, encode, markup="html")
    for i, (_, sub) in enumerate(subs):
        for j, seg in enumerate(sub.segments):
            doc.segments[len(doc.segments) - len(texts) + 1 + sum(counts[:i]) + j].markup = seg.markup
    doc.keep(raw[start + len(core):])


_ESCAPES = {"<": "&lt;", "&": "&amp;", "-->": "--&gt;"}


def stray_escaper(known: list[str]) -> Callable[[str], str]:
    """Escapes every "<", "&" and "-->" in a translation but the source's own
    tags (known) and entities: a translation cannot add markup."""
    alts = [re.escape(k) for k in sorted(set(known), key=len, reverse=True)]
    pattern = re.compile("|".join(alts + [_ENTITY, "-->", "<", "&"]))
    return lambda t: pattern.sub(lambda m: _ESCAPES.get(m.group(0), m.group(0)), t)


class _Skeleton(HTMLParser):
    """Tags with their attributes (but the translatable ones), comments,
    declarations, and the text of raw and code elements; other text dropped."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out: list[tuple] = []
        self.raw = 0

    def _attrs(self, attrs) -> tuple:
        return tuple((k, v) for k, v in attrs if k not in ATTRS)

    def handle_starttag(self, tag, attrs):
        self.out.append(("<", tag, self._attrs(attrs)))
        self.raw += tag in RAW_TEXT or tag in OPAQUE_INLINE or tag == "code"

    def handle_startendtag(self, tag, attrs):
        self.out.append(("<>", tag, self._attrs(attrs)))

    def handle_endtag(self, tag):
        self.out.append(("/", tag))
        if self.raw and (tag in RAW_TEXT or tag in OPAQUE_INLINE or tag == "code"):
            self.raw -= 1

    def handle_data(self, data):
        if self.raw:
            self.out.append(("data", data))

    def handle_comment(self, data):
        self.out.append(("!--", data))

    def handle_decl(self, decl):
        self.out.append(("!", decl))

    def handle_pi(self, data):
        self.out.append(("?", data))

    def unknown_decl(self, data):
        self.out.append(("![", data))


def html_skeleton(text: str) -> list[tuple]:
    p = _Skeleton()
    p.feed(text)
    p.close()
    return p.out


class HtmlFormat(Format):
    name = "html"
    suffixes = (".html", ".htm", ".xhtml")

    def parse(self, text: str) -> Document:
        p = _Events(text)
        p.feed(text)
        p.close()
        return parse_events(text, p.events)

    def skeleton(self, text: str) -> list[tuple]:
        return html_skeleton(text)


def parse_events(text: str, events: list[tuple[int, str, str]]) -> Document:
    doc = Document()
    ends = [e[0] for e in events[1:]] + [len(text)]
    first = events[0][0] if events else len(text)
    doc.keep(text[:first])
    raw_depth = 0  # inside script/style/pre: everything verbatim
    opaque_depth = 0  # inside inline <code>: part of the run, never looked into
    run_start: int | None = None

    def flush(upto: int) -> None:
        nonlocal run_start
        if run_start is not None:
            _run(doc, text[run_start:upto])
            run_start = None

    for (pos, kind, tag), end in zip(events, ends):
        chunk = text[pos:end]
        if raw_depth:
            if kind == "start" and tag in RAW_TEXT and not chunk.rstrip().endswith("/>"):
                raw_depth += 1
            elif kind == "end" and tag in RAW_TEXT:
                raw_depth -= 1
            doc.keep(chunk)
            continue
        if opaque_depth or (kind == "start" and tag in OPAQUE_INLINE):
            if kind in ("start", "end") and tag in OPAQUE_INLINE and not chunk.rstrip().endswith("/>"):
                opaque_depth += 1 if kind == "start" else -1
            if run_start is None:
                run_start = pos
            continue
        if kind == "data" or (kind in ("start", "end") and tag in INLINE):
            if run_start is None:
                run_start = pos
            continue
        flush(pos)
        if kind == "start" and tag in RAW_TEXT:
            if not chunk.rstrip().endswith("/>"):
                raw_depth = 1
            doc.keep(chunk)
        elif kind == "start":
            _tag_with_attrs(doc, chunk)
        else:
            doc.keep(chunk)
    flush(len(text))
    return doc
