"""Markdown: CommonMark plus GFM tables and strikethrough, footnotes, front
matter, $$ math and definition lists, parsed with markdown-it-py.

Segments are cut out of the source with the token line maps: paragraph,
heading, definition-term and table-cell text (inline markup included; code,
URLs and link targets are masked by jobs.placeholders), prose front-matter
values, and text and alt/title in HTML blocks. Everything else is verbatim:
code blocks and fences, math blocks, link reference definitions, container
markers and indentation, table delimiter rows. The identity render is exact.

Encoders write a translation back without changing the block structure: added
lines get the container prefix (quote markers, list indentation), a line that
would start a block of its own is joined to the previous one or escaped,
blank lines are dropped, table pipes are escaped. What cannot be written
safely raises UnsafeTranslation."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from markdown_it import MarkdownIt
from markdown_it.common.utils import normalizeReference
from markdown_it.token import Token
from mdit_py_plugins.deflist import deflist_plugin
from mdit_py_plugins.dollarmath import dollarmath_plugin
from mdit_py_plugins.footnote import footnote_plugin
from mdit_py_plugins.front_matter import front_matter_plugin

from jobs.placeholders import GITHUB_ALERT

from .base import Document, Format, Slot, UnsafeTranslation, has_letters, split_lines, translatable
from .html import HtmlFormat, html_skeleton

FRONT_MATTER_KEYS = frozenset(
    "title description summary subtitle excerpt caption sidebar_label linkTitle abstract".split()
)
_YAML_LINE = re.compile(r"^([A-Za-z_][\w-]*)([ \t]*:[ \t]*)(.*?)[ \t]*$")
_YAML_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\']|\'\')*\'')
_YAML_COMMENT = re.compile(r"[ \t]+#")
_YAML_TYPED = re.compile(r"(?i)y|n|yes|no|true|false|on|off|null|~|[-+.]?\d[\w.:+-]*|[-+]?\.(?:inf|nan)")
_SHORT_REF = re.compile(r"(?<![\]\\])\[((?:[^\[\]\\]|\\.)+)\](?:\[\])?(?![\[(])")  # [text][] or [text]
_MYST_TARGET = re.compile(r"\([^\n]+\)=")  # "(install-guide)=", "(SSL Certificate Verification)=": a MyST label
_AUTODOC = re.compile(r":::[ \t]+[\w.-]+[ \t]*(?:\r?\n[ \t]+\S[^\r\n]*)*")  # "::: pkg.Class" + indented YAML: mkdocstrings
# A line that opens a block, its text on the next lines: a GitHub alert ("> [!NOTE]"), an MkDocs
# admonition ('!!! note "Title"'), a Docusaurus or markdown-it-container block (":::tip Title").
_MARKER_LINE = re.compile(GITHUB_ALERT + r"[ \t]*\\?"
                          r"|(?:!!!|\?\?\?\+?|:{3,})[ \t]*[^\s:][^\r\n]*")
_TASK = re.compile(r"\[[ xX]\][ \t]+")
_EOL = re.compile(r"\r\n|\n|\r")
_CLOSING_HASHES = re.compile(r"(^|[ \t])(#+)$")
_LONG = 8  # lines: a longer top-level list, quote or table is checked a few items (a row) at a time
_SPLIT = frozenset(("bullet_list_open", "ordered_list_open", "blockquote_open", "table_open"))
_INDENT = re.compile(r"\n[ \t]+")  # a line's indentation in inline content: not text
_NO_PIPE = re.compile(r"(?<!\\)\|")
_VERBATIM = frozenset("fence code_block html_block math_block front_matter".split())
_CODE = frozenset("code_inline code_block fence math_inline math_block math_block_label math_inline_double".split())


def make_parser() -> MarkdownIt:
    return (
        MarkdownIt("commonmark")
        .enable(["table", "strikethrough"])
        .use(front_matter_plugin)
        .use(footnote_plugin)
        .use(deflist_plugin)
        .use(dollarmath_plugin, allow_space=False, allow_digits=False)  # "$5 and $10" is not math
        .disable("footnote_tail")  # definitions stay where they are written, referenced or not
    )


_NOTES = {"paragraph_open": "paragraph", "heading_open": "heading", "dt_open": "term"}
_MD = make_parser()
_BLOCKS = make_parser().disable("inline")  # block structure only: for the encoders' checks


# -- the structure that translation must keep --

def _walk(tokens: list[Token]) -> Iterator[Token]:
    for t in tokens:
        yield t
        if t.children:
            yield from _walk(t.children)


def markdown_skeleton(text: str, env: dict | None = None) -> list[tuple]:
    """The token stream without text: types, tags, nesting, attributes (but
    alt and title), code and math content, fence info, HTML tag skeletons,
    footnote labels, front-matter keys. Soft breaks may reflow."""
    out = []
    for t in _walk(_MD.parse(_no_bom(text), _copy(env))):
        if t.type in ("text", "text_special", "softbreak"):
            continue
        attrs = tuple(sorted((k, str(v)) for k, v in t.attrs.items() if k not in ("alt", "title")))
        if t.type in ("html_block", "html_inline"):
            content: object = tuple(html_skeleton(t.content))
        elif t.type == "front_matter":
            content = tuple(m.group(1) for m in re.finditer(r"(?m)^([^\s#:][^:\n]*?)[ \t]*:", t.content))
        elif t.type in _CODE:
            content = t.content
        else:
            content = None
        markup = t.markup if t.type == "link_open" else ""  # an autolink stays an autolink
        out.append((t.type, t.tag, t.nesting, attrs, t.info if t.type == "fence" else "", markup,
                    content, t.meta.get("label") if t.meta else None, t.hidden))
    return out


def _no_bom(text: str) -> str:
    """A byte order mark read as a space (offsets kept): "\ufeff# Title" is a heading."""
    return " " + text[1:] if text.startswith("\ufeff") else text


def _copy(env: dict | None) -> dict:
    """A parse environment with a document's link and footnote definitions,
    for parsing a piece of it (a parse adds to it)."""
    if not env:
        return {}
    return {"references": env.get("references", {}), "footnotes": {"refs": dict(env.get("footnotes", {}).get("refs", {}))}}


def _block_structure(text: str) -> list[tuple]:
    """Block tokens only (inline content not parsed): what an encoder must keep."""
    return [(t.type, t.tag, t.nesting, t.markup, t.info, t.hidden,
             _INDENT.sub("\n", t.content) if t.type == "inline" else t.content if t.type in _VERBATIM else None)
            for t in _BLOCKS.parse(text)]


def _is_paragraph(line: str) -> bool:
    tokens = _BLOCKS.parse(line)
    return [t.type for t in tokens] == ["paragraph_open", "inline", "paragraph_close"] and tokens[1].content == line


def _escape_start(line: str) -> str:
    """Backslash-escape what would make the line start a block ("1." -> "1\\.",
    a fence's every backtick, so no code span is left behind)."""
    m = re.match(r"\d{1,9}(?=[.)])", line)
    if m:
        return line[: m.end()] + "\\" + line[m.end():]
    run = re.match(r"`+|~+", line)
    if run:
        return "".join("\\" + c for c in run.group(0)) + line[run.end():]
    return "\\" + line if line[:1] and line[0] in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~" else line


def _lines(t: str) -> list[str]:
    """A translation's non-blank lines, stripped (a blank line would end the block)."""
    return [ln.strip() for ln in _EOL.split(t) if ln.strip()]


def _fit_lines(lines: list[str], fits: Callable[[list[str]], bool]) -> list[str]:
    """Lines that keep the block one block: each added line as is, escaped,
    or joined to the one before (a soft break may become a space)."""
    quick = [_escape_start(ln) if _risky(ln) else ln for ln in lines]
    if quick and fits(quick):  # the usual case: one check
        return quick
    out: list[str] = []
    for ln, safe in zip(lines, quick):
        # safe (escaped if it starts a block anywhere) first, then as it is, escaped, joined
        tries = [out + [c] for c in dict.fromkeys((safe, ln, _escape_start(ln)))]
        if out and not out[-1].endswith("\\"):
            joined = out[-1] + " " + safe  # ":" and "```" joined: ": \`\`\`" starts a definition
            tries += [out[:-1] + [j] for j in dict.fromkeys((joined, _escape_start(joined)))]
        tries += [t[:-1] + [_NO_PIPE.sub("&#124;", t[-1])] for t in tries if "|" in t[-1]]  # "a | b\n---": a table
        out = next((t for t in tries if fits(t)), None)
        if out is None:
            raise UnsafeTranslation(f"line {ln[:40]!r} would change the block structure")
    if not out:
        raise UnsafeTranslation("empty translation")
    return out


def _risky(line: str) -> bool:
    return not _is_paragraph(line) or bool(re.match(r"[:~][ \t]", line))


def _join(t: str) -> str:
    """The translation on one line. A line that would start a block on its own
    is escaped first: joined, two fences could pair up into a code span."""
    return " ".join(_escape_start(ln) if _risky(ln) else ln for ln in _lines(t))


def _fit_line(line: str, fits: Callable[[str], bool]) -> str:
    for cand in (line, _escape_start(line)):
        if fits(cand):
            return cand
    raise UnsafeTranslation(f"{line[:40]!r} would change the block structure")


# -- the document --

@dataclass
class _Cut:
    start: int
    end: int
    add: Callable[[Document], None]


@dataclass
class _Region:
    """A top-level block with its neighbours (a list or definition list can
    continue across a blank line). A translation fits when the region keeps its
    block structure with the translation in place, and the slot's inline token
    reads exactly the translation (no line left the block, none joined it)."""

    text: str
    offset: int  # where text[0] would be in the file (a long table's header is put before a row)
    want: list[tuple]
    env: dict  # the document's link and footnote definitions
    skeleton: list[tuple] | None = None

    def fits(self, k: int, start: int, end: int, new: str, content: str) -> bool:
        at = [j for j, w in enumerate(self.want) if w[0] == "inline"][k]
        want = self.want[:at] + [self.want[at][:-1] + (content,)] + self.want[at + 1:]
        a, b = start - self.offset, end - self.offset
        return _block_structure(self.text[:a] + new + self.text[b:]) == want

    def keeps_skeleton(self, start: int, end: int, new: str) -> bool:
        """The region's whole skeleton, inline included, with new in place."""
        if self.skeleton is None:
            self.skeleton = markdown_skeleton(self.text, self.env)
        a, b = start - self.offset, end - self.offset
        return markdown_skeleton(self.text[:a] + new + self.text[b:], self.env) == self.skeleton

    def reads(self, k: int, content: str) -> bool:
        inline = [w for w in self.want if w[0] == "inline"]
        return k < len(inline) and inline[k][-1] == _INDENT.sub("\n", content)


class _Source:
    def __init__(self, text: str):
        self.text = text
        self.lines = split_lines(text)
        self.starts = [0]
        for ln in self.lines:
            self.starts.append(self.starts[-1] + len(ln))
        self.bodies = [ln.rstrip("\r\n") for ln in self.lines]
        self.eol = "\r\n" if "\r\n" in text else "\n"
        self.env: dict = {}  # filled by the parse: link and footnote definitions
        self.view = _no_bom(text)  # what the parser reads

    def region(self, lines: tuple[int, int], head: tuple[int, int] | None = None) -> _Region:
        before = self.view[self.starts[head[0]]: self.starts[head[1]]] if head else ""
        text = before + self.view[self.starts[lines[0]]: self.starts[lines[1]]]
        return _Region(text, self.starts[lines[0]] - len(before), _block_structure(text), self.env)

    def parser_text(self) -> str:
        """What markdown-it sees: a TOML front matter ("+++") blanked out, lines kept."""
        if not self.bodies or self.bodies[0].rstrip() != "+++":
            return self.view
        end = next((i for i in range(1, len(self.bodies)) if self.bodies[i].rstrip() == "+++"), None)
        if end is None:
            return self.text
        return "\n" * (end + 1) + "".join(self.lines[end + 1:])


class MarkdownFormat(Format):
    name = "md"
    suffixes = (".md", ".markdown", ".mdown", ".mkd")

    def parse(self, text: str) -> Document:
        src = _Source(text)
        tokens = _BLOCKS.parse(src.parser_text(), src.env)
        cuts: list[_Cut] = []
        units = iter(_units(tokens, src.bodies))
        unit = next(units, None)
        inlines = [0]  # inline tokens before each token
        for t in tokens:
            inlines.append(inlines[-1] + (t.type == "inline"))
        for i, t in enumerate(tokens):
            if unit is not None and i == unit.at:
                region, first, k_base = src.region(unit.lines, unit.head), unit.count_from, unit.k_base
                unit = next(units, None)
            if t.type == "front_matter" and t.map:
                cuts += _front_matter(src, t.map[0] + 1, t.map[1] - 1)
            elif t.type == "html_block" and t.map:
                cuts += _html_block(src, t)
            if t.type not in _NOTES and t.type != "tr_open":
                continue
            k = k_base + inlines[i] - inlines[first]  # the region's inline tokens before this one
            if t.type == "tr_open":
                cells = []
                for c in tokens[i + 1:]:
                    if c.type == "tr_close":
                        break
                    if c.type == "inline":
                        cells.append(c.content)
                if all(region.reads(k + j, c) for j, c in enumerate(cells)):
                    cuts += _row(src, region, k, t.map[0], cells)
            elif not region.reads(k, tokens[i + 1].content):
                continue  # the region parses differently alone: leave it verbatim
            elif t.type == "heading_open" and t.markup.startswith("#"):
                cuts += _atx(src, region, k, tokens[i + 1], len(t.markup))
            else:
                task = t.type == "paragraph_open" and i > 0 and tokens[i - 1].type == "list_item_open"
                cuts += _block(src, region, k, tokens[i + 1], _NOTES[t.type], task=task)
        return _assemble(text, cuts)

    def skeleton(self, text: str) -> list[tuple]:
        return markdown_skeleton(text)


@dataclass
class _Unit:
    """Where a region starts (token index), its lines, the lines put before
    them (a long table's header), the token inline tokens are counted from,
    and how many inline tokens the header adds before those."""

    at: int
    lines: tuple[int, int]
    head: tuple[int, int] | None = None
    count_from: int = 0
    k_base: int = 0


def _units(tokens: list[Token], bodies: list[str]) -> list[_Unit]:
    """Regions: each top-level block with its neighbours (when only blank lines
    are between: a list or definition list can go on after one); a long top-level list
    or quote a few items or blocks at a time; a long table one row (under its
    header) at a time."""
    blocks: list[int] = []
    rows: dict[int, _Unit] = {}
    long, header_cells, table = "", 0, None
    for i, t in enumerate(tokens):
        if not t.map or t.nesting < 0:
            continue
        if t.level == 0:
            long = t.type if t.map[1] - t.map[0] > _LONG else ""
            table = t if long == "table_open" else None
            if long not in _SPLIT:
                blocks.append(i)
        elif long in _SPLIT and long != "table_open" and t.level == 1 and t.type != "inline":
            blocks.append(i)  # a list item, or a block in a quote
        elif table is not None and t.type == "tr_open":
            head = (table.map[0], table.map[0] + 2)
            if t.map[0] == table.map[0]:  # the header row: header and delimiter lines
                header_cells = sum(1 for x in tokens[i:] if x.type == "inline" and x.map == t.map)
                rows[i] = _Unit(i, head, count_from=i)
            else:
                rows[i] = _Unit(i, tuple(t.map), head, count_from=i, k_base=header_cells)
    def near(a: int, b: int) -> bool:  # only blank lines between blocks a and b
        return not any(ln.strip() for ln in bodies[tokens[a].map[1]: tokens[b].map[0]])

    units = []
    for b, at in enumerate(blocks):
        first = blocks[b - 1] if b > 0 and near(blocks[b - 1], at) else at
        last = blocks[b + 1] if b + 1 < len(blocks) and near(at, blocks[b + 1]) else at
        units.append(_Unit(at, (tokens[first].map[0], tokens[last].map[1]), count_from=first))
    return sorted(units + list(rows.values()), key=lambda u: u.at)


def _assemble(text: str, cuts: list[_Cut]) -> Document:
    doc = Document()
    pos = 0
    for c in sorted(cuts, key=lambda c: c.start):
        if c.start < pos:
            continue
        doc.keep(text[pos:c.start])
        c.add(doc)
        pos = c.end
    doc.keep(text[pos:])
    return doc


def _continuation(prefix: str) -> str:
    """The prefix for an added line: quote markers kept, everything else
    (list markers, footnote labels, indentation) turned into as many spaces."""
    return "".join(c if c in ">\t" else " " for c in prefix)


def _continuation_of(src: _Source, first: int, offsets: list[int], default: str) -> str:
    """The prefix the source's continuation lines share, when it is quote markers and
    indentation only: an indented body ("!!! note" then "    text", MkDocs) stays
    indented, a lazy line stays lazy (GFM's alert ends at a "> [!NOTE]" line before one)."""
    own = {src.text[src.starts[first + j]: off] for j, off in enumerate(offsets[1:], 1)}
    if len(own) == 1:
        (p,) = own
        if _continuation(p) == p:
            return p
    return default


def _spaced(lines: list[str]) -> list[str]:
    """Backslash hard breaks written as two trailing spaces (the source's way):
    GFM reads "> [!NOTE]\\" as no alert marker."""
    return [ln[:-1] + "  " if k < len(lines) - 1 and (len(ln) - len(ln.rstrip("\\"))) % 2 else ln
            for k, ln in enumerate(lines)]


def _line_end(src: _Source, line: int) -> int:
    """Where a line's text ends (trailing blanks and line ending excluded)."""
    return src.starts[line] + len(src.bodies[line].rstrip(" \t"))


def _locate(src: _Source, first: int, content: str) -> list[int] | None:
    """Offset where each content line starts in the source, or None when the
    source lines do not end in the content lines (tabs in odd places)."""
    offsets = []
    for k, c in enumerate(content.split("\n")):
        line = first + k
        if line >= len(src.bodies):
            return None
        body = src.bodies[line].rstrip(" \t")
        c = c.strip(" \t")
        if not c or not body.endswith(c):
            return None
        offsets.append(src.starts[line] + len(body) - len(c))
    return offsets


def _cut(region: _Region, start: int, end: int, text: str, raw: str, encode: Callable[[str], str],
         note: str) -> _Cut:
    """A Markdown segment: its encoder's output is checked against its region."""
    check = functools.partial(region.keeps_skeleton, start, end)
    text = _full_references(text, region.env)
    return _Cut(start, end, lambda doc: doc.add(text, raw=raw, encode=encode, markup="md", note=note, check=check))


def _full_references(text: str, env: dict) -> str:
    """Collapsed and shortcut reference links (`[text][]`, `[text]`) as full ones
    (`[text][text]`): their label is then masked, and a translated link text
    keeps its target. One that is not a link (in code, say) stays as it is."""
    refs = env.get("references", {})
    want = None
    for m in reversed(list(_SHORT_REF.finditer(text))):
        label = m.group(1)
        if label.startswith("^") or normalizeReference(label) not in refs:
            continue
        new = text[: m.start()] + f"[{label}][{label}]" + text[m.end():]
        want = want or markdown_skeleton(text, env)
        if markdown_skeleton(new, env) == want:
            text = new
    return text


def _block(src: _Source, region: _Region, k: int, inline: Token, note: str, task: bool = False) -> list[_Cut]:
    """A paragraph-like block over one or more lines."""
    if not inline.map:
        return []
    offsets = _locate(src, inline.map[0], inline.content)
    if offsets is None:
        return []
    lead = ""  # a task list's checkbox: verbatim, but what the inline token reads first
    m = _TASK.match(src.text, offsets[0]) if task else None
    if m:
        if len(offsets) == 1 and m.end() >= src.starts[inline.map[0]] + len(src.bodies[inline.map[0]].rstrip()):
            return []  # a checkbox and nothing else
        lead = m.group(0)
        offsets[0] = m.end()
    first = inline.map[0]
    if _AUTODOC.fullmatch(src.text[offsets[0]: _line_end(src, first + len(offsets) - 1)]):
        return []
    marker = src.text[offsets[0]: src.starts[first + 1]].rstrip("\r\n") if len(offsets) > 1 else ""
    if _MARKER_LINE.fullmatch(marker):  # "> [!NOTE]", "!!! note": the block's text starts on the next line
        lead, offsets, first = marker + "\n", offsets[1:], first + 1
    tail = ""  # a closing ":::" line: verbatim too
    closing = src.text[offsets[-1]: _line_end(src, first + len(offsets) - 1)]
    if len(offsets) > 1 and re.fullmatch(r":{3,}", closing):
        tail, offsets = "\n" + closing, offsets[:-1]
    n = len(offsets)
    last_body = src.bodies[first + n - 1].rstrip(" \t")
    start, end = offsets[0], src.starts[first + n - 1] + len(last_body)
    pieces = []
    breaks = set()  # how the source writes its hard breaks: "  " or "\\"
    for j, off in enumerate(offsets):
        piece = src.text[off: src.starts[first + j] + len(src.bodies[first + j])]
        stripped = piece.rstrip(" \t")
        if j < n - 1 and stripped.endswith("\\"):
            breaks.add("\\")
        if j < n - 1 and piece.endswith("  "):  # a trailing-spaces hard break: made visible
            breaks.add("\\" if stripped.endswith("\\") else "  ")
            piece = piece if stripped.endswith("\\") else stripped + "\\"
        else:
            piece = stripped
        pieces.append(piece)
    text = "\n".join(pieces)
    if not translatable(text, "md") or _MYST_TARGET.fullmatch(text) or all(p.startswith("%") for p in pieces):
        return []  # not prose: a MyST label, MyST comment lines
    prefix = src.text[src.starts[first]: offsets[0]]
    joiner = src.eol + _continuation_of(src, first, offsets, _continuation(prefix))

    def written(lines: list[str]) -> list[str]:
        return _spaced(lines) if breaks == {"  "} else lines

    def encode(t: str) -> str:
        return joiner.join(written(_fit_lines(_lines(t), lambda ls: region.fits(
            k, start, end, joiner.join(written(ls)), lead + "\n".join(written(ls)) + tail))))

    return [_cut(region, start, end, text, src.text[start:end], encode, note)]


def _atx(src: _Source, region: _Region, k: int, inline: Token, level: int) -> list[_Cut]:
    if not inline.map or not translatable(inline.content, "md"):
        return []
    line = inline.map[0]
    body = src.bodies[line]
    head = re.match(r"[^#]*#{%d}[ \t]*" % level, body)  # container prefix and the opening hashes
    at = body.find(inline.content, head.end() if head else 0)
    if at < 0:
        return []
    start = src.starts[line] + at
    end = start + len(inline.content)

    def encode(t: str) -> str:
        line = _CLOSING_HASHES.sub(lambda m: m.group(1) + "\\" + m.group(2), _join(t))
        return _fit_line(line, lambda c: region.fits(k, start, end, c, c))

    return [_cut(region, start, end, inline.content, inline.content, encode, "heading")]


def _cell_spans(body: str) -> list[tuple[int, int]]:
    """(start, end) of each cell of a table row: split at pipes not preceded by
    a backslash (as markdown-it does), outer empty cells dropped, cells stripped."""
    pipes = [m.start() for m in re.finditer(r"(?<!\\)\|", body)]
    bounds = [-1] + pipes + [len(body)]
    spans = [(a + 1, b) for a, b in zip(bounds, bounds[1:])]
    if spans and not body[spans[0][0]: spans[0][1]].strip():
        spans.pop(0)
    if spans and not body[spans[-1][0]: spans[-1][1]].strip():
        spans.pop()
    out = []
    for a, b in spans:
        cell = body[a:b]
        lead = len(cell) - len(cell.lstrip())
        out.append((a + lead, a + len(cell.rstrip())))
    return out


def _escape_cell(t: str) -> str:
    t = _NO_PIPE.sub(r"\\|", _join(t))
    return t + " " if t.endswith("\\") else t  # a trailing backslash would escape the next pipe


def _row(src: _Source, region: _Region, k: int, line: int, cells: list[str]) -> list[_Cut]:
    body = src.bodies[line]
    spans = _cell_spans(body)
    cuts = []
    for j, ((a, b), content) in enumerate(zip(spans, cells)):
        text = body[a:b]
        if text.replace("\\|", "|") != content or not translatable(text, "md"):
            continue
        start = src.starts[line] + a

        def encode(t: str, start=start, end=start + len(text), k=k + j) -> str:
            return _fit_line(_escape_cell(t), lambda c: region.fits(k, start, end, c, c.replace("\\|", "|").strip()))

        cuts.append(_cut(region, start, start + len(text), text, text, encode, "table cell"))
    return cuts


def _html_block(src: _Source, t: Token) -> list[_Cut]:
    """An HTML block outside any container: its text and alt/title translated
    as HTML; a translation never gets a blank line (that would end the block)."""
    a, b = t.map
    start, end = src.starts[a], src.starts[b]
    raw = src.text[start:end]
    if _EOL.sub("\n", raw) != t.content:
        return []
    sub = HtmlFormat().parse(raw)
    if not sub.segments:
        return []
    for k, p in enumerate(sub.parts):
        if isinstance(p, Slot):
            sub.parts[k] = Slot(p.ids, p.raw, _no_blank_lines(p.encode, src.eol))
    return [_Cut(start, end, lambda doc: doc.extend(sub))]


def _no_blank_lines(enc: Callable[..., str], eol: str) -> Callable[..., str]:
    def encode(*ts: str) -> str:
        out = enc(*ts)
        return eol.join(ln for ln in _EOL.split(out) if ln.strip())
    return encode


def _front_matter(src: _Source, first: int, end: int) -> list[_Cut]:
    cuts = []
    for line in range(first, end):
        m = _YAML_LINE.match(src.bodies[line])
        if m and m.group(1) in FRONT_MATTER_KEYS and m.group(3):
            cut = _yaml_value(src, src.starts[line] + m.start(3), m.group(3), line + 1, end)
            cuts += [cut] if cut else []
    return cuts


def _one_line_yaml(t: str) -> str:
    return " ".join(_lines(t))


def _yaml_value(src: _Source, start: int, value: str, line: int, end: int) -> _Cut | None:
    """A prose value: quoted on its line, or plain (wrapped over indented lines
    too); a comment after it stays. None for anything else (flow collections,
    block scalars, a quoted value over lines)."""
    wrapped = _wrapped(src, line, end)
    quoted = _YAML_QUOTED.match(value)
    if quoted and not wrapped and (quoted.end() == len(value) or _YAML_COMMENT.match(value, quoted.end())):
        raw = quoted.group(0)
        q, inner = raw[0], raw[1:-1]
        text = inner.replace("''", "'") if q == "'" else inner.replace('\\"', '"')

        def enc(t: str) -> str:
            t = _one_line_yaml(t)
            return q + (t.replace("'", "''") if q == "'" else t.replace("\\", "\\\\").replace('"', '\\"')) + q
    elif value[0] in "\"'[{|>&*!%@`#":
        return None
    else:
        comment = _YAML_COMMENT.search(value)
        first = value[: comment.start()] if comment else value
        rest = [src.bodies[k].strip() for k in wrapped]
        if any(not r or r.startswith("#") or _YAML_COMMENT.search(r) for r in rest) or (comment and rest):
            return None  # blank or comment lines in a wrapped value: left as written
        text = "\n".join([first.strip()] + rest)
        raw = src.text[start: src.starts[wrapped[-1]] + len(src.bodies[wrapped[-1]].rstrip())] if wrapped \
            else first.rstrip()
        enc = _plain_scalar
    if not translatable(text):
        return None
    return _Cut(start, start + len(raw), lambda doc: doc.add(text, raw=raw, encode=enc, note="front matter"))


def _wrapped(src: _Source, line: int, end: int) -> list[int]:
    """The indented lines from line on that continue a value (blank lines between them too)."""
    k = line
    while k < end and (not src.bodies[k].strip() or src.bodies[k][:1] in " \t"):
        k += 1
    while k > line and not src.bodies[k - 1].strip():
        k -= 1
    return list(range(line, k))


def _plain_scalar(t: str) -> str:
    """A plain YAML scalar, quoted when the translation would not parse as one."""
    s = _one_line_yaml(t)
    if re.fullmatch(r"[^:#'\"\[\]{},&*!|>%@`]+", s) and not s.startswith(("-", "?")) \
            and not _YAML_TYPED.fullmatch(s):  # "yes", "null", "1.5" would not read as text
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
