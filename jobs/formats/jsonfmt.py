"""JSON i18n files: string values translated; keys, nesting, numbers,
whitespace and the original escaping of untouched strings kept."""

from __future__ import annotations

import json
import re
from json.decoder import scanstring

from .base import Document, Format, translatable

_URLISH = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|www\.|/|\./|#)\S*$|^[\w.+-]+@[\w-]+\.[\w.]+$", re.I)


def _encode(t: str) -> str:
    return json.dumps(t, ensure_ascii=False)


class JsonFormat(Format):
    name = "json"
    suffixes = (".json",)

    def parse(self, text: str) -> Document:
        try:
            json.loads(_no_bom(text))
        except json.JSONDecodeError as e:
            raise ValueError(f"not valid JSON: {e}") from None
        doc = Document()
        stack: list[list] = []  # [kind, key or index, expecting_key]
        pos = last = 0
        if text.startswith("\ufeff"):  # a byte order mark: kept, not parsed
            pos = 1
        n = len(text)
        while pos < n:
            c = text[pos]
            if c in "{[":
                stack.append(["obj" if c == "{" else "arr", 0, c == "{"])
                pos += 1
            elif c in "}]":
                stack.pop()
                pos += 1
            elif c == ",":
                if stack and stack[-1][0] == "obj":
                    stack[-1][2] = True
                elif stack:
                    stack[-1][1] += 1
                pos += 1
            elif c == '"':
                value, end = scanstring(text, pos + 1)
                if stack and stack[-1][0] == "obj" and stack[-1][2]:
                    stack[-1][1] = value  # a key: never translated
                    stack[-1][2] = False
                elif translatable(value) and not _URLISH.match(value.strip()):
                    doc.keep(text[last:pos])
                    path = ".".join(str(f[1]) for f in stack)
                    doc.add(value, raw=text[pos:end], encode=_encode, note=path)
                    last = end
                pos = end
            else:
                pos += 1
        doc.keep(text[last:])
        return doc

    def skeleton(self, text: str) -> object:
        """Keys in order, nesting, and every value but strings."""
        def walk(x):
            if isinstance(x, str):
                return str
            if isinstance(x, list):
                return [walk(v) for v in x]
            if isinstance(x, tuple):
                return ("{}", tuple((k, walk(v)) for k, v in x))
            return x
        return walk(json.loads(_no_bom(text), object_pairs_hook=tuple))


def _no_bom(text: str) -> str:
    """Windows editors save JSON with a byte order mark; json.loads refuses it."""
    return text[1:] if text.startswith("\ufeff") else text
