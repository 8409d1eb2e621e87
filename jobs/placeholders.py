"""Placeholders: the parts of a segment a translation must carry over unchanged.

    find(text, markup)      -> placeholders in order ({name}, %s, <b>, `code`, URLs, ...)
    protect(text, markup)   -> Protected: text with the opaque parts (inline code,
                               URLs, link targets) replaced by ⟦n⟧ markers, to show the model
    Protected.restore(out)  -> the model's output with the markers put back
    check(source, translation, markup) -> problems, [] when the same placeholders came back

markup: "text" (strings from .po/.json/.txt/subtitles), "md" or "html".
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

MARK = "⟦{}⟧"
_MARK_RE = re.compile(r"⟦(\d+)⟧")

_U = "[^\\s<>\"'`)\\]«»“”‘’「」『』、。，（）⟦⟧]"  # URL characters (stop at CJK punctuation too)
# URLs, and what GitHub autolinks without a scheme: www. addresses and e-mail addresses
_URL = (rf"(?:(?:https?|ftp)://|(?<![\w.@/-])www\.){_U}*[^\s<>\"'`)\].,;:!?«»“”‘’「」『』、。，（）⟦⟧]|\bmailto:{_U}+"
        r"|(?<![\w.+-])[A-Za-z0-9._+-]+@[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)+")
_LIQUID = r"\{%-?[^{}]*?-?%\}"  # Jekyll/Liquid and Jinja tags: {% include note.html %}
_ASS = r"\{\\[^{}\n]*\}"  # subtitle override codes: {\an8}, {\i1}
_PATTERNS = {
    "url": _URL,
    "ass": _ASS,
    "double_brace": r"\{\{-?\s*[^{}]+?\s*-?\}\}",
    "liquid": _LIQUID,
    "brace": r"\{[\w.\-\[\]]*(?:![rsa])?(?::[^{}\s]*)?\}",
    "printf": r"%(?:\([\w.\-]+\))?(?:\d+\$)?[-+#0]*(?:\d+|\*)?(?:\.\d+)?(?:l|ll|h|z)?[sdifFeEgGxXoucrp@]|%%",
    "dollar": r"\$\d+|\$\{[\w.]+\}",
    "tag": r"</?[A-Za-z][\w:.-]*(?:\s+[^<>]*?)?/?>|</?\d+/?>|<(?:\d+:)?\d{2}:\d{2}\.\d{3}>",
    "emoji": r"(?<![\w:]):[a-z0-9_+\-]*[a-z][a-z0-9_+\-]*:(?![\w:])",
}
MATH = r"(?<![\w$\\])\$[^$\s](?:[^$\n]*[^$\s\\])?\$(?![\w$])"  # inline math: $x^2$ (not "$5 and $10")
# A block's type at a line start: MkDocs admonitions ("!!! note", "??? tip inline end" before a
# quoted title) and Docusaurus or markdown-it-container blocks (":::tip", "::: warning").
_ADMONITION = r"(?m:^(?:(?:!!!|\?\?\?\+?)[ \t]+(?:[\w-]+(?:[ \t]+[\w-]+)*(?=[ \t]*(?:\"|$))|[\w-]+)|:{3,}[ \t]*[\w.-]+))"
# Site generators' syntax: attribute lists ("{#install .wide}", "{: .lead}"), wiki links
# ("[[Some Page]]") and table-of-contents markers ("[TOC]" on its own line).
_SITE = r"\{:?[ \t]*[#.][^{}\n]*\}|\[\[[^\[\]\n]+\]\]|(?im:^\[toc\][ \t]*$)"
_LATEX_ENV = r"\\begin\{(?P<env>[A-Za-z]+\*?)\}.*?\\end\{(?P=env)\}"  # \begin{equation}...\end{equation}
GITHUB_ALERT = r"(?i:\[!(?:note|tip|important|warning|caution)\])"  # "> [!NOTE]": an alert's marker
# Opaque in Markdown: code spans, autolinks, link targets ("](...)"), reference labels ("][x]"),
# GitHub alert markers ("> [!NOTE]"), admonition types, site generators' syntax, LaTeX environments,
# HTML comments.
_MD_OPAQUE = MATH + "|" + _LATEX_ENV + "|" + _ADMONITION + "|" + _SITE + "|" + GITHUB_ALERT + r"|<!--.*?-->|(?P<bt>`+)[^`](?:.*?[^`])??(?P=bt)(?!`)|`+[^`]`*|<(?:https?|mailto|ftp):[^>\s]+>|\]\([^()\s]*(?:\([^()]*\)[^()\s]*)*(?:\s+(?:\"[^\"]*\"|'[^']*'))?\)|\]\[[^\]]*\]"
# Opaque in HTML runs: inline code-like elements with their content.
_HTML_OPAQUE = r"<(?P<el>code|kbd|samp)\b[^>]*>.*?</(?P=el)\s*>"

_FIND = {
    "text": re.compile("|".join(f"(?:{p})" for p in _PATTERNS.values()), re.S),
    "md": re.compile(f"(?:{_MD_OPAQUE})|(?:{_HTML_OPAQUE})|" + "|".join(f"(?:{p})" for p in _PATTERNS.values()), re.S),
    "html": re.compile(f"(?:{_HTML_OPAQUE})|" + "|".join(f"(?:{p})" for p in _PATTERNS.values()), re.S),
}
# What protect() hides from the model: never anything a translator should read.
_ATTR_TAG = r"<[A-Za-z][\w:.-]*\s[^<>]*>"  # a tag with attributes: nothing in it to read
_OPAQUE = {
    "text": re.compile(f"(?:{_URL})|(?:{_ASS})"),
    "md": re.compile(f"(?:{_MD_OPAQUE})|(?:{_HTML_OPAQUE})|(?:{_ATTR_TAG})|(?:{_URL})|(?:{_LIQUID})", re.S),
    "html": re.compile(f"(?:{_HTML_OPAQUE})|(?:{_ATTR_TAG})|(?:{_URL})|(?:{_LIQUID})", re.S | re.I),
}


def find(text: str, markup: str = "text") -> list[str]:
    return [m.group(0) for m in _FIND[markup].finditer(text)]


def without_placeholders(text: str, markup: str = "text") -> str:
    return _FIND[markup].sub(" ", text)


@dataclass
class Protected:
    text: str
    saved: list[str] = field(default_factory=list)

    def restore(self, out: str) -> str:
        def put(m: re.Match) -> str:
            k = int(m.group(1))
            return self.saved[k - 1] if 0 < k <= len(self.saved) else m.group(0)
        return _MARK_RE.sub(put, out)


def protect(text: str, markup: str = "text") -> Protected:
    saved: list[str] = []

    def hide(m: re.Match) -> str:
        s = m.group(0)
        if markup == "md" and s.startswith("]"):  # keep the "]" and the brackets readable
            saved.append(s[1:])
            return "]" + MARK.format(len(saved))
        saved.append(s)
        return MARK.format(len(saved))

    return Protected(_OPAQUE[markup].sub(hide, text), saved)


def check(source: str, translation: str, markup: str = "text") -> list[str]:
    """Problems with a translation's placeholders: the multisets must be equal,
    each one missing or added (as often as it is) is a problem, and so is any
    leftover ⟦n⟧ marker."""
    want, got = Counter(find(source, markup)), Counter(find(translation, markup))
    problems = [f"missing {p!r}" + (f" (x{n})" if n > 1 else "") for p, n in (want - got).items()]
    problems += [f"added {p!r}" + (f" (x{n})" if n > 1 else "") for p, n in (got - want).items()]
    stray = _MARK_RE.findall(translation)
    if stray and not _MARK_RE.search(source):
        problems.append(f"stray marker(s) {', '.join(MARK.format(s) for s in stray)}")
    return problems
