"""Translation memory on disk (sqlite3): finished translations keyed by model,
languages, glossary, prompt version and segment, written as they finish so a
rerun translates only what changed and an interrupted run resumes. Segments
that no attempt could translate are kept too (table failed), so a rerun of an
unchanged folder makes no model call; --retry-failed tries them again."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path

ENV = "LLAMAQ_TRANSLATION_MEMORY"


def default_path() -> Path:
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "llamaq" / "translation-memory.sqlite3"


def memory_key(*, model: str, src: str | None, tgt: str, glossary: str, prompt: str, markup: str,
               text: str) -> str:
    raw = json.dumps([model, (src or "").lower(), tgt.lower(), glossary, prompt, markup, text])
    return hashlib.sha256(raw.encode()).hexdigest()


class TranslationMemory:
    def __init__(self, path: str | Path | None = None):
        """path None: an in-memory store (nothing kept)."""
        self.path = Path(path) if path else None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path) if self.path else ":memory:", check_same_thread=False,
                                   isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS tm (key TEXT PRIMARY KEY, model TEXT, src TEXT, tgt TEXT,"
            " source TEXT, target TEXT, created REAL)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS failed (key TEXT PRIMARY KEY, source TEXT, problems TEXT,"
                         " created REAL)")

    def _select(self, table: str, column: str, keys: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = keys[i: i + 500]
                q = f"SELECT key, {column} FROM {table} WHERE key IN ({','.join('?' * len(chunk))})"
                out.update(self._db.execute(q, chunk).fetchall())
        return out

    def get_many(self, keys: list[str]) -> dict[str, str]:
        return self._select("tm", "target", keys)

    def failures_many(self, keys: list[str]) -> dict[str, list[str]]:
        """The problems of segments an earlier run could not translate."""
        return {k: json.loads(v) for k, v in self._select("failed", "problems", keys).items()}

    def put_failure(self, key: str, *, source: str, problems: list[str]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO failed VALUES (?,?,?,?)",
                             (key, source, json.dumps(problems), time.time()))

    def put(self, key: str, *, model: str, src: str | None, tgt: str, source: str, target: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO tm VALUES (?,?,?,?,?,?,?)",
                             (key, model, src or "", tgt, source, target, time.time()))
            self._db.execute("DELETE FROM failed WHERE key = ?", (key,))

    def __len__(self) -> int:
        """Segments remembered: translations and failures."""
        with self._lock:
            return sum(self._db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("tm", "failed"))

    def close(self) -> None:
        with self._lock:
            self._db.close()
