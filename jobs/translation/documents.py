"""Many documents, one run: every segment of every file goes to the
Translator together (one batch for the engine), then each file is rendered.
A failed segment keeps its source text and is reported, and so does one whose
translation the format cannot write without changing the file's structure.
Output files are written atomically (write_atomic)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from jobs.formats import Document, Format

from .pipeline import Outcome, Progress, Translator


@dataclass
class FileJob:
    name: str  # for reports: the path, or "-" for stdin
    text: str
    fmt: Format
    out: Path | None = None  # None: the caller writes the result (stdout)
    doc: Document | None = None
    error: str | None = None  # a parse error: the file is skipped


@dataclass
class DocumentResult:
    name: str
    out: str | None
    text: str | None  # the translated document (None when it could not be parsed)
    segments: int = 0
    reused: int = 0
    failed: list[dict] = field(default_factory=list)  # {"segment", "problems"}
    warnings: list[dict] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict:
        return {"file": self.name, "out": self.out, "segments": self.segments, "reused": self.reused,
                "failed": self.failed, "warnings": self.warnings, "error": self.error}


def parse_all(jobs: list[FileJob]) -> None:
    for j in jobs:
        if j.error:  # unreadable (not UTF-8): never parsed as an empty document
            continue
        try:
            j.doc = j.fmt.parse(j.text)
        except ValueError as e:
            j.error = str(e)


def translate_documents(jobs: list[FileJob], translator: Translator,
                        on_progress: Callable[[Progress], None] | None = None) -> list[DocumentResult]:
    parse_all(jobs)
    ok = [j for j in jobs if j.doc is not None]
    segments = [s for j in ok for s in j.doc.segments]
    outcomes = translator.translate(segments, on_progress)
    results, k = [], 0
    by_job: dict[int, list[Outcome]] = {}
    for j in ok:
        by_job[id(j)] = outcomes[k: k + len(j.doc.segments)]
        k += len(j.doc.segments)
    for j in jobs:
        if j.doc is None:
            results.append(DocumentResult(j.name, None, None, error=j.error))
            continue
        outs = by_job[id(j)]
        texts = [o.text if o.text is not None else s.text for s, o in zip(j.doc.segments, outs)]
        rendered = j.fmt.render(j.doc, texts)
        r = DocumentResult(j.name, str(j.out) if j.out else None, rendered.text,
                           segments=len(outs), reused=sum(o.origin == "memory" for o in outs))
        for i, (s, o) in enumerate(zip(j.doc.segments, outs)):
            if o.text is None:
                r.failed.append({"segment": s.text, "problems": o.problems})
            elif i in rendered.rejected:
                r.failed.append({"segment": s.text, "problems": [rendered.rejected[i]]})
            for w in o.warnings:
                r.warnings.append({"segment": s.text, "warning": w})
        results.append(r)
    return results


def write_atomic(path: Path, text: str) -> None:
    """Write text (UTF-8) to a temp file in path's folder, then rename it over
    path: a killed run leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
