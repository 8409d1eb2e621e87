"""Inline Markdown as numbered tags, so a model never has to copy syntax it
could break (DeepL's tag handling, the `<1>…</1>` of i18n libraries):

    t = tag("Press **Save** or see [the docs](a.md) and `make`")
    t.text                      # 'Press <1>Save</1> or see <2>the docs</2> and <3/>'
    t.restore("Appuyez sur <1>Enregistrer</1> … <2>la doc</2> … <3/>")  # Markdown again

Pairs wrap text the model translates (emphasis, strong, strikethrough, link
text, image alt); atoms stand for what it must not touch (code spans,
autolinks, inline HTML, hard breaks, inline math). The model's own text is
escaped on the way back, so a stray `*` or leading `#` is literal text.
tag() returns None for a segment it cannot show this way (reference links,
more than one block, text that already looks like a tag): it goes raw."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from markdown_it import MarkdownIt

from jobs.placeholders import MATH, find

_MD = MarkdownIt("commonmark").enable(["strikethrough"])
_TAG = re.compile(r"<(/?)(\d+)(/?)>")
_ATOM_TEXT = re.compile(rf"({MATH}|\[\^[^\]\s]+\])")  # inline math, footnote refs: atoms in text
_PAIRED = {"em_open": "em_close", "strong_open": "strong_close", "s_open": "s_close", "link_open": "link_close"}


@dataclass
class Tagged:
    text: str  # what the model sees
    pairs: dict[int, tuple[str, str]] = field(default_factory=dict)  # n -> Markdown before, after
    atoms: dict[int, str] = field(default_factory=dict)  # n -> Markdown for <n/>

    def restore(self, out: str) -> str | None:
        """The model's output as Markdown; None when its tags do not match
        (each pair once, properly nested; each atom once; nothing else)."""
        parts, stack, seen = [], [], set()
        pos = 0
        for m in _TAG.finditer(out):
            parts.append(_escape(out[pos:m.start()], not parts or parts[-1].endswith("\n")))
            pos = m.end()
            closing, n, atom = m.group(1) == "/", int(m.group(2)), m.group(3) == "/"
            if atom:
                if n not in self.atoms or n in seen:
                    return None
                seen.add(n)
                parts.append(self.atoms[n])
            elif closing:
                if not stack or stack.pop() != n:
                    return None
                parts.append(self.pairs[n][1])
            else:
                if n not in self.pairs or n in seen:
                    return None
                seen.add(n)
                stack.append(n)
                parts.append(self.pairs[n][0])
        parts.append(_escape(out[pos:], not parts or parts[-1].endswith("\n")))
        if stack or seen != set(self.pairs) | set(self.atoms):
            return None
        return "".join(parts)


def tag(source: str) -> Tagged | None:
    """The segment with its inline Markdown as tags; None when there is none
    to tag or it cannot be tagged faithfully."""
    if _TAG.search(source) or "⟦" in source:
        return None
    if [t.type for t in _MD.parse(source)] != ["paragraph_open", "inline", "paragraph_close"]:
        return None
    t, text = Tagged(""), []
    stack: list[tuple[int, object]] = []  # open pairs: (n, their opening token)
    autolink: int | None = None  # inside <https://...>: its text is the atom
    for tok in _MD.parseInline(source)[0].children or []:
        n = len(t.pairs) + len(t.atoms) + 1
        if autolink is not None:
            if tok.type == "text":
                t.atoms[autolink] = f"<{tok.content}>"
            elif tok.type == "link_close":
                autolink = None
        elif tok.type == "text":
            for k, piece in enumerate(_ATOM_TEXT.split(tok.content)):
                if k % 2:  # an atom, as code is
                    n = len(t.pairs) + len(t.atoms) + 1
                    t.atoms[n] = piece
                    piece = f"<{n}/>"
                text.append(piece)
        elif tok.type == "softbreak":
            text.append("\n")
        elif tok.type == "link_open" and tok.markup == "autolink":
            autolink = n
            t.atoms[n] = ""
            text.append(f"<{n}/>")
        elif tok.type in _PAIRED:
            if (tok.attrGet("href") or "").startswith("ref:"):
                return None
            t.pairs[n] = ("[" if tok.type == "link_open" else tok.markup, "")
            stack.append((n, tok))
            text.append(f"<{n}>")
        elif tok.type in _PAIRED.values():
            k, opener = stack.pop()
            before = t.pairs[k][0]
            t.pairs[k] = (before, _link_tail(opener) if opener.type == "link_open" else before)
            text.append(f"</{k}>")
        elif tok.type == "image":
            t.pairs[n] = ("![", _link_tail(tok, "src"))
            text.append(f"<{n}>{tok.content}</{n}>")
        elif tok.type in ("code_inline", "html_inline", "hardbreak"):
            t.atoms[n] = (_code(tok.markup, tok.content) if tok.type == "code_inline"
                          else tok.content if tok.type == "html_inline" else "\\\n")
            text.append(f"<{n}/>")
        else:
            return None
    if not t.pairs and not t.atoms:
        return None
    t.text = "".join(text)
    return t


def _link_tail(tok, attr: str = "href") -> str:
    title = tok.attrGet("title")
    dest = tok.attrGet(attr) or ""
    if re.search(r"[\s()<>]", dest):
        dest = f"<{dest}>"
    return "](" + dest + (f' "{title}"' if title else "") + ")"


def _code(ticks: str, content: str) -> str:
    pad = " " if content.startswith(("`", " ")) or content.endswith(("`", " ")) else ""
    return f"{ticks}{pad}{content}{pad}{ticks}"


_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")
_LINE_START = re.compile(r"^([ \t]*)([#>+=-]|\d+[.)])", re.M)


def _escape(text: str, line_start: bool) -> str:
    """The model's text as literal Markdown; placeholders ({name}, URLs) untouched.
    line_start: the text begins a line (where `#`, `-`, `1.` would start a block)."""
    out, pos = [], 0
    for p in _placeholders(text):
        i = text.index(p, pos)
        out.append(_SPECIAL.sub(r"\\\1", text[pos:i]))
        out.append(p)
        pos = i + len(p)
    out.append(_SPECIAL.sub(r"\\\1", text[pos:]))
    text = "".join(out)
    head, nl, rest = ("", "", text) if line_start else text.partition("\n")
    return head + nl + _LINE_START.sub(_block_escape, rest)


def _block_escape(m: re.Match) -> str:
    lead, mark = m.group(1), m.group(2)
    return lead + (mark[:-1] + "\\" + mark[-1] if mark[0].isdigit() else "\\" + mark)


def _placeholders(text: str) -> list[str]:
    return find(text, "text")
