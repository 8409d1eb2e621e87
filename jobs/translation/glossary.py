"""Glossary: a CSV of source,target[,lang] terms, put in the prompt and checked
in the output."""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Glossary:
    terms: list[tuple[str, str]] = field(default_factory=list)

    @property
    def digest(self) -> str:
        """Stable hash of the terms, part of the translation-memory key."""
        if not self.terms:
            return ""
        h = hashlib.sha256("\n".join(f"{s}\t{t}" for s, t in sorted(self.terms)).encode())
        return h.hexdigest()[:16]

    def prompt_lines(self) -> str:
        return "\n".join(f"- {s} => {t}" for s, t in self.terms)

    def relevant(self, text: str) -> list[tuple[str, str]]:
        return [(s, t) for s, t in self.terms if _contains(text, s)]

    def misses(self, source: str, translation: str) -> list[str]:
        """Terms in the source whose glossary translation is not in the output."""
        return [f"{s!r} should be {t!r}" for s, t in self.relevant(source) if not _contains(translation, t)]


def _contains(text: str, term: str) -> bool:
    # word boundaries only where the term starts/ends with a word character (not for CJK runs)
    pat = re.escape(term)
    if re.match(r"\w", term, re.ASCII):
        pat = r"(?<!\w)" + pat
    if re.search(r"\w$", term, re.ASCII):
        pat = pat + r"(?!\w)"
    return re.search(pat, text, re.IGNORECASE) is not None


def load_glossary(path: str | Path, target_lang: str) -> Glossary:
    """Rows source,target[,lang]; rows for another language are skipped; a header
    row (source,target...) is allowed; blank lines and #comments are ignored."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise ValueError(f"cannot read glossary {p}: {e.strerror}") from None
    terms = []
    want = target_lang.lower().replace("_", "-")
    for n, row in enumerate(csv.reader(text.splitlines()), 1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if n == 1 and [c.strip().lower() for c in row[:2]] == ["source", "target"]:
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise ValueError(f"{p}:{n}: expected 'source,target[,lang]', got {','.join(row)!r}")
        lang = row[2].strip().lower().replace("_", "-") if len(row) > 2 else ""
        if lang and lang != want and lang.split("-")[0] != want.split("-")[0]:
            continue
        terms.append((row[0].strip(), row[1].strip()))
    return Glossary(terms)
