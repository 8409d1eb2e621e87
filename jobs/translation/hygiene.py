"""Model output hygiene: the translation alone, without labels, explanations,
wrapping quotes or fences, or the echoed source."""

from __future__ import annotations

import re

_EXPLAIN = re.compile(
    r"^\s*(?:\(?\*{0,2}(?:notes?|explanation|translator'?s? note|translation notes?|literal(?:ly)?|"
    r"alternatively|this (?:translates|means|translation))\b|---+\s*$|\(.*(?:literally|translation).*\)\s*$)",
    re.IGNORECASE,
)
# List numbers a model puts before an item's text (the item's marker is not in the segment).
_NUMBERED = re.compile(r"^(?:\d{1,2}[.)][ \t]+)+")
_QUOTES = [('"', '"'), ("“", "”"), ("«", "»"), ("「", "」"), ("'", "'"), ("„", "“")]


def clean(output: str, source: str, target_name: str, labels: tuple[str, ...] | list[str] = ()) -> str:
    """labels: the few-shot prompt's "Label:" names; output that runs on into
    another example (a line starting with one) is cut there."""
    t = output.replace("\r\n", "\n").strip()
    label = re.compile(
        rf"^(?:\*\*)?(?:{re.escape(target_name)}(?: translation)?|translation|translated text|output)"
        r"(?:\*\*)?\s*[:：]\s*", re.IGNORECASE)
    t = label.sub("", t, count=1).strip()
    if not _NUMBERED.match(source.lstrip()):  # "1. 1. Créer ..." for an item's text
        t = _NUMBERED.sub("", t, count=1)
    if t.startswith("```") and not source.lstrip().startswith("```"):
        t = re.sub(r"^```[^\n]*\n?|\n?```\s*$", "", t).strip()
    if labels:
        t = _run_on(t, source, labels)
    src_lines = source.count("\n") + 1
    lines = t.split("\n")
    # echoed source first, then the translation
    if len(lines) > src_lines and "\n".join(lines[:src_lines]).strip() == source.strip():
        lines = lines[src_lines:]
        while lines and (not lines[0].strip() or label.match(lines[0])):
            lines[0] = label.sub("", lines[0])
            if lines[0].strip():
                break
            lines.pop(0)
    # explanations: from the first explanatory line, or a blank line the source does not have
    for i, ln in enumerate(lines):
        if i and (_EXPLAIN.match(ln) or (not ln.strip() and "\n\n" not in source)):
            lines = lines[:i]
            break
    if src_lines == 1 and len(lines) > 1:
        lines = lines[:1]
    t = "\n".join(lines).strip()
    for a, b in _QUOTES:
        if len(t) > 2 and t.startswith(a) and t.endswith(b) and not source.strip().startswith(a):
            t = t[len(a): -len(b)].strip()
            break
    return t


def _run_on(text: str, source: str, labels) -> str:
    """The text before the first line that starts a new example ("English: ...")."""
    names = "|".join(re.escape(label) for label in labels)
    start = re.compile(rf"^\s*(?:{names})\s*[:：]", re.MULTILINE)
    for m in start.finditer(text):
        if not start.search(source):
            return text[: m.start()].rstrip()
    return text
