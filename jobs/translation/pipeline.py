"""The translation pipeline: segments in, checked translations out.

Identical segments are translated once; the translation memory answers what
it already knows; everything else is submitted at once; each output is
cleaned, its placeholders restored and checked; a failed check gets one retry
with a prompt naming what was lost, then is reported, never written."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from jobs.formats.base import Segment
from jobs.placeholders import check, find, protect

from .glossary import Glossary
from .hygiene import clean
from .memory import TranslationMemory, memory_key
from .prompts import PROMPT_VERSION, PromptBuilder
from .submitters import Completion, Job, Submitter


@dataclass
class Outcome:
    """One segment's result. text is None when the segment failed."""

    text: str | None
    origin: str  # "memory", "model" or "failed"
    problems: list[str] = field(default_factory=list)  # why it failed
    warnings: list[str] = field(default_factory=list)  # glossary misses, truncation


@dataclass
class Progress:
    done: int = 0
    total: int = 0
    reused: int = 0
    failed: int = 0
    completion_tokens: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def tokens_per_s(self) -> float:
        dt = time.monotonic() - self.started
        return self.completion_tokens / dt if dt > 0 else 0.0


def max_tokens_for(text: str) -> int:
    """A generous output budget from the source length (CJK packs more per char)."""
    wide = sum(1 for c in text if ord(c) > 0x2E7F)
    return min(4096, 24 + int(1.5 * (len(text) - wide) / 2) + 3 * wide)


@dataclass
class _Unit:
    """One distinct (markup, text) to translate."""

    markup: str
    text: str
    key: str
    protected: object = None
    result: Outcome | None = None


class Translator:
    def __init__(self, submitter: Submitter, *, tgt: str, src: str | None = None,
                 glossary: Glossary | None = None, memory: TranslationMemory | None = None,
                 style: str = "auto", max_tokens: int | None = None):
        if style == "auto":
            style = "chat" if submitter.has_chat_template else "base"
        if style not in ("chat", "base"):
            raise ValueError(f"prompt style must be auto, chat or base, not {style!r}")
        self.submitter = submitter
        self.src, self.tgt = src, tgt
        self.glossary = glossary or Glossary()
        self.memory = memory if memory is not None else TranslationMemory(None)
        self.prompts = PromptBuilder(src, tgt, self.glossary, style)
        self.max_tokens = max_tokens  # a cap on the per-segment budget

    def _key(self, markup: str, text: str) -> str:
        return memory_key(model=self.submitter.model_id, src=self.src, tgt=self.tgt,
                          glossary=self.glossary.digest, prompt=PROMPT_VERSION + self.prompts.style,
                          markup=markup, text=text)

    def translate(self, segments: list[Segment],
                  on_progress: Callable[[Progress], None] | None = None) -> list[Outcome]:
        units: dict[tuple[str, str], _Unit] = {}
        cores = []
        for s in segments:
            core = s.text.strip()
            cores.append(core)
            if (s.markup, core) not in units:
                units[(s.markup, core)] = _Unit(s.markup, core, self._key(s.markup, core))
        progress = Progress(total=len(units))
        known = self.memory.get_many([u.key for u in units.values()])
        todo = []
        for u in units.values():
            if u.key in known:
                u.result = Outcome(known[u.key], "memory")
                progress.done += 1
                progress.reused += 1
            else:
                u.protected = protect(u.text, u.markup)
                todo.append(u)
        if on_progress:
            on_progress(progress)

        again = self._attempt(todo, progress, on_progress, retry=False)
        self._attempt(again, progress, on_progress, retry=True)

        out = []
        for s, core in zip(segments, cores):
            r = units[(s.markup, core)].result
            assert r is not None
            if r.text is not None:  # the segment's own surrounding whitespace back
                lead = s.text[: len(s.text) - len(s.text.lstrip())]
                trail = s.text[len(s.text.rstrip()):]
                r = Outcome(lead + r.text + trail, r.origin, r.problems, r.warnings)
            out.append(r)
        return out

    def _attempt(self, units: list[_Unit], progress: Progress, on_progress, retry: bool) -> list[_Unit]:
        """Submit all units at once; on a first attempt, return the ones to retry."""
        if not units:
            return []
        jobs = []
        for u in units:
            prompt = self.prompts.build(u.protected.text, must_keep=_must_keep(u) if retry else None)
            budget = max_tokens_for(u.protected.text) * (2 if retry else 1)
            if self.max_tokens:
                budget = min(budget, self.max_tokens)
            jobs.append(Job(prompt, budget))
        again = []
        for i, c in self.submitter.run(jobs):
            u = units[i]
            progress.completion_tokens += c.completion_tokens
            outcome = self._judge(u, c)
            if outcome.text is None and not retry:
                again.append(u)
                continue
            u.result = outcome
            progress.done += 1
            if outcome.text is None:
                progress.failed += 1
            else:
                self.memory.put(u.key, model=self.submitter.model_id, src=self.src, tgt=self.tgt,
                                source=u.text, target=outcome.text)
            if on_progress:
                on_progress(progress)
        return again

    def _judge(self, u: _Unit, c: Completion) -> Outcome:
        if c.error or c.finish_reason == "error":
            return Outcome(None, "failed", [f"model error: {c.error}"])
        text = clean(c.text, u.protected.text, self.prompts.tgt_name)
        text = u.protected.restore(text)
        problems = check(u.text, text, u.markup)
        if not text.strip():
            problems.insert(0, "empty translation")
        if problems:
            return Outcome(None, "failed", problems)
        warnings = [f"glossary: {m}" for m in self.glossary.misses(u.text, text)]
        if c.finish_reason == "length":
            warnings.append("output reached its token limit")
        return Outcome(text, "model", [], warnings)


def _must_keep(u: _Unit) -> list[str] | None:
    """Everything the model must carry over, as it saw it (⟦n⟧ markers included),
    named in the retry prompt."""
    names = find(u.protected.text, u.markup) + [f"⟦{k + 1}⟧" for k in range(len(u.protected.saved))]
    return list(dict.fromkeys(names)) or None
