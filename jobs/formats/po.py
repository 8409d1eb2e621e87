"""gettext .po/.pot: untranslated entries get msgstr filled. msgid, msgctxt,
comments, flags, obsolete entries, the header entry and entries that already
have a translation are kept verbatim. Plural entries: two segments (msgid and
msgid_plural); msgstr[0] gets the singular, msgstr[1..] the plural (a language
with one form, nplurals=1, gets the plural: that form is used for every n)."""

from __future__ import annotations

import re

from .base import Document, Format, UnsafeTranslation, line_runs, translatable

_KEYWORD = re.compile(r'^(msgctxt|msgid_plural|msgid|msgstr(?:\[(\d+)\])?)\s+(".*")\s*$')
_CONT = re.compile(r'^\s*(".*")\s*$')
_NPLURALS = re.compile(r"nplurals\s*=\s*(\d+)")
_ESC = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}


def unquote(lit: str) -> str:
    body = lit.strip()[1:-1]
    return re.sub(r"\\(.)", lambda m: _ESC.get(m.group(1), "\\" + m.group(1)), body)


_QUOTE = {"\\": "\\\\", '"': '\\"', "\t": "\\t", "\r": "\\r", "\n": "\\n", "\a": "\\a", "\b": "\\b",
          "\f": "\\f", "\v": "\\v"}


def quote(s: str) -> str:
    return '"' + re.sub(r'[\\"\t\r\n\a\b\f\v]', lambda m: _QUOTE[m.group(0)], s) + '"'


def msgstr_lines(keyword: str, value: str, eol: str) -> str:
    """gettext's layout: one line if it has no newline, else "" then one line per \\n."""
    if "\n" not in value.rstrip("\n"):
        return f"{keyword} {quote(value)}{eol}"
    pieces = re.findall(r"[^\n]*\n|[^\n]+$", value)
    return f'{keyword} ""{eol}' + "".join(quote(p) + eol for p in pieces)


class _Entry:
    def __init__(self, lines: list[str]):
        self.lines = lines
        self.fields: dict[str, str] = {}
        self.msgstr_start: int | None = None  # index of the first msgstr line
        self.msgstr_end = len(lines)
        self.nstr = 0
        self.obsolete = all(ln.startswith("#~") or not ln.strip() for ln in lines)
        self.fuzzy = any(ln.startswith("#,") and "fuzzy" in ln for ln in lines)
        key = None
        for i, ln in enumerate(lines):
            m = _KEYWORD.match(ln.rstrip("\r\n"))
            if m:
                key = m.group(1)
                if key.startswith("msgstr"):
                    if self.msgstr_start is None:
                        self.msgstr_start = i
                    self.nstr += 1
                elif self.msgstr_start is not None:
                    self.msgstr_end = i
                self.fields[key] = unquote(m.group(3))
                continue
            m = _CONT.match(ln.rstrip("\r\n"))
            if m and key:
                self.fields[key] += unquote(m.group(1))
            elif self.msgstr_start is not None and ln.startswith("#"):
                self.msgstr_end = min(self.msgstr_end, i)

    @property
    def translated(self) -> bool:
        return any(v for k, v in self.fields.items() if k.startswith("msgstr"))


class PoFormat(Format):
    name = "po"
    suffixes = (".po", ".pot")

    def parse(self, text: str) -> Document:
        doc = Document()
        eol = "\r\n" if "\r\n" in text else "\n"
        nplurals = 2
        for lines in _entries(text):
            e = _Entry(lines)
            if "msgid" not in e.fields or e.msgstr_start is None or e.obsolete:
                doc.keep("".join(lines))
                continue
            if e.fields["msgid"] == "" and "msgctxt" not in e.fields:  # the header entry
                m = _NPLURALS.search(e.fields.get("msgstr", ""))
                nplurals = int(m.group(1)) if m else nplurals
                doc.keep("".join(lines))
                continue
            if e.translated or e.fuzzy or not translatable(e.fields["msgid"]):
                doc.keep("".join(lines))
                continue
            doc.keep("".join(lines[: e.msgstr_start]))
            raw = "".join(lines[e.msgstr_start: e.msgstr_end])
            cut = (lambda s: s.rstrip("\r\n")) if raw == raw.rstrip("\r\n") else (lambda s: s)
            note = e.fields.get("msgctxt", "")
            if "msgid_plural" in e.fields:
                forms = (e.fields["msgid"], e.fields["msgid_plural"])
                doc.add_multi(list(forms), raw, note=note, encode=_plural_encoder(forms, max(e.nstr, nplurals), cut, eol))
            else:
                doc.add(e.fields["msgid"], raw=raw, note=note,
                        encode=lambda t, cut=cut: cut(msgstr_lines("msgstr", t, eol)))
            doc.keep("".join(lines[e.msgstr_end:]))
        return doc

    def skeleton(self, text: str) -> list[tuple]:
        return po_skeleton(text)


def _plural_encoder(forms: tuple[str, str], n: int, cut, eol: str):
    def encode(one: str, many: str) -> str:
        if (one == forms[0]) != (many == forms[1]):  # one form failed (kept in source): no half-English entry
            raise UnsafeTranslation("the other plural form is untranslated")
        return cut("".join(msgstr_lines(f"msgstr[{k}]", one if k == 0 and n > 1 else many, eol) for k in range(n)))
    return encode


_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"')


def po_skeleton(text: str) -> list[tuple]:
    """Per entry: comments and flags, msgctxt, msgid, msgid_plural, which
    msgstr forms it has, and whether every line is well formed."""
    out = []
    for lines in _entries(text):
        if not "".join(lines).strip():
            continue
        e = _Entry(lines)
        well_formed = all(
            not ln.strip() or ln.startswith("#")
            or (m := _KEYWORD.match(ln.rstrip("\r\n")) or _CONT.match(ln.rstrip("\r\n")))
            and _LITERAL.fullmatch(m.group(m.lastindex)) for ln in lines)
        out.append((tuple(ln.rstrip() for ln in lines if ln.startswith("#")), e.fields.get("msgctxt"),
                    e.fields.get("msgid"), e.fields.get("msgid_plural"),
                    tuple(sorted(k for k in e.fields if k.startswith("msgstr"))), well_formed))
    return out


def _entries(text: str) -> list[list[str]]:
    """Entries are runs of non-blank lines; blank runs are their own (verbatim) entries."""
    return line_runs(text, lambda line: not line.strip())
