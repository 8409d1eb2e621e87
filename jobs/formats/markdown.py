"""Markdown (CommonMark/GFM subset, line based).

Segments: paragraph text (list items and block quotes included, a wrapped
paragraph is one segment), heading text, table cells, selected front-matter
values, text and alt/title in HTML blocks. Verbatim: fenced and indented code,
front-matter keys and other values, link reference definitions, thematic
breaks, table delimiter rows, list markers, quote markers, indentation, HTML
comments and tags. Inline code, URLs and link targets inside a segment are
masked by jobs.placeholders before the model sees the text."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .base import Document, Format, has_letters, split_lines, translatable
from .html import HtmlFormat

FRONT_MATTER_KEYS = frozenset(
    "title description summary subtitle excerpt caption sidebar_label linkTitle abstract".split()
)
_QUOTE = re.compile(r"^(?:[ \t]{0,3}>[ \t]?)+")
_MARKER = re.compile(r"^([ \t]*)([-*+]|\d{1,9}[.)])([ \t]+(?:\[[ xX]\][ \t]+)?|(?=\r?\n|\r|$))")
_FOOTNOTE = re.compile(r"^[ \t]{0,3}\[\^[^\]]+\]:[ \t]*")
_LINKDEF = re.compile(r"^[ \t]{0,3}\[[^\]^][^\]]*\]:[ \t]*\S")
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})")
_HEADING = re.compile(r"^([ \t]{0,3}#{1,6})([ \t]+|$)(.*?)((?:[ \t]+#+)?[ \t]*)$")
_HR = re.compile(r"^[ \t]{0,3}(?:(?:\*[ \t]*){3,}|(?:-[ \t]*){3,}|(?:_[ \t]*){3,})$")
_SETEXT = re.compile(r"^[ \t]{0,3}=+[ \t]*$")
_HTML_START = re.compile(r"^[ \t]{0,3}<(?:!--|/?[A-Za-z][\w-]*(?:[\s/>]|$)|[!?])")
_HTML_RAW = re.compile(r"^[ \t]{0,3}<(script|pre|style|textarea)(?:[\s>]|$)", re.I)
_TABLE_DELIM = re.compile(r"^[ \t]*\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$")
_EOL = re.compile(r"(\r\n|\n|\r)$")


def _split_eol(line: str) -> tuple[str, str]:
    m = _EOL.search(line)
    return (line[: m.start()], m.group(1)) if m else (line, "")


def _width(s: str) -> int:
    return len(s.expandtabs(4))


def _one_line(t: str) -> str:
    return " ".join(p.strip() for p in t.splitlines() if p.strip())


@dataclass
class _Para:
    prefixes: list[str] = field(default_factory=list)
    contents: list[str] = field(default_factory=list)
    eols: list[str] = field(default_factory=list)


class MarkdownFormat(Format):
    name = "md"
    suffixes = (".md", ".markdown", ".mdown", ".mkd")

    def parse(self, text: str) -> Document:
        return _Parser(text).run()


class _Parser:
    def __init__(self, text: str):
        self.lines = split_lines(text)
        self.doc = Document()
        self.para: _Para | None = None
        self.list_col = 0
        self.prev_blank = True
        self.prev_code = False

    # -- output helpers --
    def keep(self, s: str) -> None:
        self.doc.keep(s)

    def flush(self) -> None:
        p, self.para = self.para, None
        if p is None:
            return
        body = "\n".join(p.contents)
        if not translatable(body, "md"):
            for pre, c, e in zip(p.prefixes, p.contents, p.eols):
                self.keep(pre + c + e)
            return
        self.keep(p.prefixes[0])
        raw_parts = [p.contents[0]]
        for pre, c, e_prev in zip(p.prefixes[1:], p.contents[1:], p.eols):
            raw_parts.append(e_prev + pre + c)
        raw = "".join(raw_parts)
        core = body.rstrip()
        trail = raw[len(raw.rstrip()):]
        raw = raw[: len(raw) - len(trail)]
        eol = p.eols[0] or "\n"
        cont = p.prefixes[1:] or [_continuation(p.prefixes[0])]

        def encode(t: str) -> str:
            lines = [ln.strip() for ln in t.split("\n") if ln.strip()] or [""]
            out = [lines[0]]
            for k, ln in enumerate(lines[1:]):
                out.append(eol + cont[min(k, len(cont) - 1)] + ln)
            return "".join(out)

        self.doc.add(core, raw=raw, encode=encode, markup="md")
        self.keep(trail + p.eols[-1])

    def text_segment(self, s: str) -> None:
        self.doc.add_text(s, markup="md", encode=_one_line)

    # -- blocks --
    def run(self) -> Document:
        i = self.front_matter()
        n = len(self.lines)
        while i < n:
            i = self.line(i)
        self.flush()
        return self.doc

    def front_matter(self) -> int:
        if not self.lines or self.lines[0].rstrip() not in ("---", "+++"):
            return 0
        fence = self.lines[0].rstrip()
        closers = ("---", "...") if fence == "---" else ("+++",)
        end = next((j for j in range(1, len(self.lines)) if self.lines[j].rstrip() in closers), None)
        if end is None:
            return 0
        self.keep(self.lines[0])
        for line in self.lines[1:end]:
            m = re.match(r"^([A-Za-z_][\w-]*)([ \t]*[:=][ \t]*)(.*?)([ \t]*(?:\r\n|\n|\r)?)$", line)
            if fence == "---" and m and m.group(1) in FRONT_MATTER_KEYS and m.group(3):
                self.keep(m.group(1) + m.group(2))
                _yaml_value(self.doc, m.group(3))
                self.keep(m.group(4))
            else:
                self.keep(line)
        self.keep(self.lines[end])
        return end + 1

    def line(self, i: int) -> int:
        line = self.lines[i]
        content, eol = _split_eol(line)
        q = _QUOTE.match(content)
        qpre = q.group(0) if q else ""
        rest = content[len(qpre):]
        indent = _width(rest) - _width(rest.lstrip(" \t"))

        if not rest.strip():
            self.flush()
            self.keep(line)
            self.prev_blank = True
            return i + 1
        was_blank, self.prev_blank = self.prev_blank, False

        if self.para is None and (was_blank or self.prev_code) and not _MARKER.match(rest) \
                and indent >= self.list_col + 4:
            self.keep(line)  # indented code
            self.prev_code = True
            return i + 1
        self.prev_code = False
        if was_blank and self.list_col and indent < self.list_col and not _MARKER.match(rest):
            self.list_col = 0
            if indent >= 4:
                self.keep(line)
                self.prev_code = True
                return i + 1

        m = _FENCE.match(rest)
        if m:
            self.flush()
            return self.fenced(i, m.group(1))
        if _HR.match(rest) or (self.para is not None and _SETEXT.match(rest)):
            self.flush()
            self.keep(line)
            return i + 1
        m = _HEADING.match(rest)
        if m:
            self.flush()
            self.keep(qpre + m.group(1) + m.group(2))
            self.text_segment(m.group(3))
            self.keep(m.group(4) + eol)
            return i + 1
        if "|" in rest and i + 1 < len(self.lines) and self.para is None:
            nxt = _split_eol(self.lines[i + 1])[0]
            nxt = nxt[len(_QUOTE.match(nxt).group(0)):] if _QUOTE.match(nxt) else nxt
            if "|" in nxt and _TABLE_DELIM.match(nxt):
                return self.table(i)
        if self.para is None and _HTML_START.match(rest):
            return self.html_block(i)
        if _LINKDEF.match(rest):
            self.flush()
            self.keep(line)
            return i + 1

        m = _MARKER.match(rest) or _FOOTNOTE.match(rest)
        if m:
            self.flush()
            pre = qpre + m.group(0)
            body = rest[len(m.group(0)):]
            if m.re is _MARKER:
                self.list_col = _width(m.group(0))
            fm = _FENCE.match(body)
            if fm:  # "- ```" : a fence opening inside a list item
                self.keep(qpre + m.group(0))
                return self.fenced(i, fm.group(1), first=body + eol)
            if not body.strip():
                self.keep(line)
                return i + 1
            self.para = _Para([pre], [body], [eol])
            return i + 1

        lead = rest[: len(rest) - len(rest.lstrip(" \t"))]
        if self.para is None:
            self.para = _Para([qpre + lead], [rest.lstrip(" \t")], [eol])
        else:
            self.para.prefixes.append(qpre + lead)
            self.para.contents.append(rest.lstrip(" \t"))
            self.para.eols.append(eol)
        return i + 1

    def fenced(self, i: int, fence: str, first: str | None = None) -> int:
        self.keep(self.lines[i] if first is None else first)
        j = i + 1
        closer = re.compile(r"^[ \t]*" + re.escape(fence[0]) + "{%d,}[ \t]*$" % len(fence))
        while j < len(self.lines):
            content = _split_eol(self.lines[j])[0]
            q = _QUOTE.match(content)
            self.keep(self.lines[j])
            j += 1
            if closer.match(content[len(q.group(0)):] if q else content):
                break
        return j

    def table(self, i: int) -> int:
        self.flush()
        j = i
        while j < len(self.lines):
            content, eol = _split_eol(self.lines[j])
            if "|" not in content or not content.strip():
                break
            if j == i + 1:
                self.keep(self.lines[j])  # delimiter row
            else:
                q = _QUOTE.match(content)
                qpre = q.group(0) if q else ""
                self.keep(qpre)
                for k, cell in enumerate(_cells(content[len(qpre):])):
                    if k % 2:
                        self.keep(cell)
                    else:
                        self.text_segment(cell)
                self.keep(eol)
            j += 1
        return j

    def html_block(self, i: int) -> int:
        self.flush()
        first = _split_eol(self.lines[i])[0]
        raw_tag = _HTML_RAW.match(first)
        if first.lstrip().startswith("<!--"):
            end = lambda s: "-->" in s  # noqa: E731
        elif raw_tag:
            tag = raw_tag.group(1).lower()
            end = lambda s: f"</{tag}" in s.lower()  # noqa: E731
        else:
            end = None
        j = i
        while j < len(self.lines):
            line = self.lines[j]
            if end is None and not line.strip():
                break
            j += 1
            if end is not None and end(line):
                break
        block = "".join(self.lines[i:j])
        if end is not None and not raw_tag:  # a comment
            self.keep(block)
        else:
            self.doc.extend(HtmlFormat().parse(block))
        self.prev_blank = False
        return j


def _continuation(prefix: str) -> str:
    """Prefix for added lines of a one-line paragraph: quote markers kept,
    list markers turned into spaces."""
    q = _QUOTE.match(prefix)
    qpre = q.group(0) if q else ""
    rest = prefix[len(qpre):]
    return qpre + " " * _width(rest)


def _cells(row: str) -> list[str]:
    """Alternating [cell, separator, cell, ...]; pipes inside `code` or escaped are not separators."""
    out, cur, k, in_code = [], [], 0, 0
    while k < len(row):
        c = row[k]
        if c == "\\" and k + 1 < len(row):
            cur.append(row[k: k + 2])
            k += 2
            continue
        if c == "`":
            n = len(row[k:]) - len(row[k:].lstrip("`"))
            in_code = 0 if in_code == n else (n if not in_code else in_code)
            cur.append("`" * n)
            k += n
            continue
        if c == "|" and not in_code:
            out.extend(["".join(cur), "|"])
            cur = []
        else:
            cur.append(c)
        k += 1
    out.append("".join(cur))
    return out


def _yaml_value(doc: Document, value: str) -> None:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        q = value[0]
        inner = value[1:-1]
        text = inner.replace("''", "'") if q == "'" else inner.replace('\\"', '"')
        if not has_letters(text):
            doc.keep(value)
            return

        def enc(t: str, q=q) -> str:
            t = _one_line(t)
            return q + (t.replace("'", "''") if q == "'" else t.replace("\\", "\\\\").replace('"', '\\"')) + q

        doc.add(text, raw=value, encode=enc, markup="text", note="front matter")
    elif value[0] in "[{|>&*!%@`#":
        doc.keep(value)
    else:
        # plain scalar: quote the translation when it would not parse as one
        doc.add_text(value, note="front matter",
                     encode=lambda t: (lambda s: s if re.fullmatch(r"[^:#'\"\[\]{},&*!|>%@`]+", s)
                                       and not s.startswith(("-", "?")) else '"' + s.replace("\\", "\\\\")
                                       .replace('"', '\\"') + '"')(_one_line(t)))
