"""End-to-end translation on real models: the CLI on the tiny random-weight
model (its output is noise, but structure, memory, resume and checks are
exactly what they would be with a real model), and one slow run on the
default model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.translate import command
from jobs.formats import format_for
from jobs.translation import EngineSubmitter, TranslationMemory, Translator
from jobs.translation.pipeline import LADDER, Rung
from jobs.translation.verify import md_structure

MD = """# Getting started

Install the package and run the worker.

```bash
pip install llamaq
```

- First step
- Second step
"""
SRT = "1\n00:00:01,000 --> 00:00:02,500\nGood morning.\n\n2\n00:00:03,000 --> 00:00:04,000\nSee you\nlater.\n"
JSON_DOC = '{\n  "menu": {"open": "Open file", "items": ["New window", "Close"]},\n  "count": 3\n}\n'


def run(args, **kw):
    r = CliRunner().invoke(command, [str(a) for a in args], catch_exceptions=False, **kw)
    return r


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "docs"
    (d / "guide").mkdir(parents=True)
    (d / "guide" / "start.md").write_text(MD)
    (d / "talk.srt").write_text(SRT)
    (d / "strings.json").write_text(JSON_DOC)
    (d / "notes.txt").write_text("Plain notes.\n\nPlain notes.\n")  # a repeat: translated once
    (d / "image.png").write_bytes(b"\x89PNG")  # not a document: ignored
    return d


def base_args(tmp_path, model):
    return ["--model", model, "--memory", tmp_path / "tm.sqlite3", "--max-tokens", 4, "--json"]


def test_folder_keeps_structure_verifies_every_segment_and_rerun_makes_no_model_call(tmp_path, folder,
                                                                                     tiny_model_path):
    # the tiny model's output is noise: verification turns most of it away, and
    # what it turns away stays in source; the files keep their structure either way
    out = tmp_path / "out"
    r = run([folder, "--to", "ja", "--out", out, *base_args(tmp_path, tiny_model_path)])
    report = json.loads(r.stdout)
    t = report["totals"]
    assert t["files"] == 4 and t["segments"] == 11 and t["unique_segments"] == 10
    assert t["accepted_first_try"] + t["accepted_after_retry"] + t["failed"] >= 10 and t["failed"] > 0
    assert r.exit_code == 1 and not report["ok"]  # failures are reported
    assert 10 <= t["model_calls"] <= 10 * len(LADDER) and t["reused_from_memory"] == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["guide/start.md", "notes.txt", "strings.json", "talk.srt"]

    md = (out / "guide" / "start.md").read_text()
    assert md_structure(md) == md_structure(MD)
    assert "```bash\npip install llamaq\n```" in md and md.startswith("# ") and "\n- " in md
    for f in report["files"]:
        for bad in f["failed"]:
            assert bad["segment"] in (out / Path(f["out"]).relative_to(out)).read_text()  # kept in source
    srt = (out / "talk.srt").read_text()
    assert re.findall(r".*-->.*", srt) == re.findall(r".*-->.*", SRT)
    assert srt.split("\n\n")[0].split("\n")[0] == "1"
    strings = json.loads((out / "strings.json").read_text())
    assert list(strings) == ["menu", "count"] and strings["count"] == 3
    assert list(strings["menu"]) == ["open", "items"] and len(strings["menu"]["items"]) == 2
    first = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    # unchanged folder: everything from memory (failures too), identical output, same report
    r = run([folder, "--to", "ja", "--out", out, *base_args(tmp_path, tiny_model_path)])
    again = json.loads(r.stdout)
    assert r.exit_code == 1
    assert again["totals"]["model_calls"] == 0 and again["totals"]["reused_from_memory"] == 11
    assert again["totals"]["failed"] == t["failed"]
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == first

    # one new paragraph: only it goes to the model (up the ladder if it fails)
    (folder / "notes.txt").write_text("Plain notes.\n\nPlain notes.\n\nA new line of notes.\n")
    r = run([folder, "--to", "ja", "--out", out, *base_args(tmp_path, tiny_model_path)])
    assert 1 <= json.loads(r.stdout)["totals"]["model_calls"] <= len(LADDER)


def test_suffix_mode_include_exclude_and_outputs_not_retranslated(tmp_path, folder, tiny_model_path):
    args = [folder, "--to", "de", "--include", "*.md", "--include", "*.txt", "--exclude", "notes.*",
            *base_args(tmp_path, tiny_model_path)]
    r = run(args)
    assert r.exit_code in (0, 1), r.output  # 1: the tiny model's noise fails verification
    assert (folder / "guide" / "start.de.md").exists() and not (folder / "notes.de.txt").exists()
    assert [f["file"] for f in json.loads(r.stdout)["files"]] == [str(folder / "guide" / "start.md")]
    r = run(args)  # start.de.md is an output, not a new input
    assert [f["file"] for f in json.loads(r.stdout)["files"]] == [str(folder / "guide" / "start.md")]


def test_broken_placeholders_are_reported_never_written(tmp_path, tiny_model_path):
    po = tmp_path / "app.po"
    po.write_text('msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n\n'
                  '#, python-format\nmsgid "Hello %(name)s, you have %d messages"\nmsgstr ""\n\n'
                  'msgid "Settings"\nmsgstr ""\n')
    r = run([po, "--to", "ja", *base_args(tmp_path, tiny_model_path)])
    assert r.exit_code == 1
    report = json.loads(r.stdout)
    assert not report["ok"] and report["totals"]["failed"] >= 1
    failed = {f["segment"]: f["problems"] for f in report["files"][0]["failed"]}
    problems = failed["Hello %(name)s, you have %d messages"]
    assert any("%(name)s" in p or "%d" in p or "truncated" in p for p in problems)
    out = (tmp_path / "app.ja.po").read_text()
    assert 'msgid "Hello %(name)s, you have %d messages"\nmsgstr ""\n' in out  # left untranslated
    calls = report["totals"]["model_calls"]
    assert calls >= len(LADDER)  # it climbed the whole ladder
    # the failure is remembered: a rerun reports it again without the model...
    r = run([po, "--to", "ja", *base_args(tmp_path, tiny_model_path)])
    assert r.exit_code == 1 and json.loads(r.stdout)["totals"]["model_calls"] == 0
    # ...unless asked to try again
    r = run([po, "--to", "ja", "--retry-failed", *base_args(tmp_path, tiny_model_path)])
    assert json.loads(r.stdout)["totals"]["model_calls"] >= len(LADDER)


class Interrupting(EngineSubmitter):
    """The real engine, but the run is interrupted after `after` results (like Ctrl-C)."""

    def __init__(self, engine, after):
        super().__init__(engine)
        self.after = after

    def run(self, jobs):
        for n, item in enumerate(super().run(jobs)):
            if n == self.after:
                raise KeyboardInterrupt
            yield item


def test_interrupted_run_resumes_from_memory(tmp_path, tiny_engine):
    text = "\n\n".join(f"Paragraph {w} of the document." for w in
                       "one two three four five six seven eight nine ten eleven twelve".split()) + "\n"
    segs = format_for("doc.txt").parse(text).segments
    db = tmp_path / "tm.sqlite3"
    one = (Rung(),)  # one rung: every result is final, and remembered as it arrives
    with pytest.raises(KeyboardInterrupt):
        Translator(Interrupting(tiny_engine, 5), tgt="fr", memory=TranslationMemory(db), max_tokens=4,
                   ladder=one).translate(segs)
    assert len(TranslationMemory(db)) == 5
    sub = EngineSubmitter(tiny_engine)
    outs = Translator(sub, tgt="fr", memory=TranslationMemory(db), max_tokens=4, ladder=one).translate(segs)
    assert sub.calls == 7
    assert sum(o.tries == 0 for o in outs) == 5
    again = EngineSubmitter(tiny_engine)
    Translator(again, tgt="fr", memory=TranslationMemory(db), max_tokens=4, ladder=one).translate(segs)
    assert again.calls == 0


def test_stdin_to_stdout(tmp_path, tiny_model_path):
    r = run(["-", "--to", "de", "--format", "srt", *base_args(tmp_path, tiny_model_path)], input=SRT)
    assert r.exit_code in (0, 1), r.output
    assert re.findall(r".*-->.*", r.stdout) == re.findall(r".*-->.*", SRT)
    report = r.stderr[r.stderr.index("{\n"):]  # after any llama.cpp log lines
    assert json.loads(report)["totals"]["segments"] == 2


def test_dry_run_loads_no_model(tmp_path, folder):
    r = run([folder, "--to", "ja", "--dry-run", "--model", tmp_path / "missing.gguf",
             "--memory", tmp_path / "tm.sqlite3"])
    assert r.exit_code == 0, r.output
    assert "4 files, 11 segments (dry run)" in r.stdout
    assert not any(p.name.endswith(".ja.md") for p in folder.rglob("*"))


@pytest.mark.parametrize("args,message", [
    (["nope/", "--to", "ja"], "no such file or folder"),
    (["{f}", "--to", "ja", "--out", "o", "--suffix", ".x"], "either --out or --suffix"),
    (["{doc}", "--to", "ja"], "no translation format"),
])
def test_bad_input_is_a_clear_error(tmp_path, args, message):
    (tmp_path / "a.md").write_text("# Hi\n")
    (tmp_path / "report.docx").write_text("x")
    args = [a.format(f=tmp_path / "a.md", doc=tmp_path / "report.docx") for a in args]
    r = run(args)
    assert r.exit_code == 2 and message in r.output


def test_bench_translate_runs(tmp_path, tiny_model_path):
    from cli.bench.translate import command as bench

    out = tmp_path / "bench.json"
    r = CliRunner().invoke(bench, ["--model", str(tiny_model_path), "--segments", "6", "--max-tokens", "3",
                                   "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    engine, base = data["rows"]
    assert [row["segments"] for row in data["rows"]] == [6, 6]
    assert engine["completion_tokens"] > 0 and base["completion_tokens"] > 0
    assert data["speedup"] == pytest.approx(base["seconds"] / engine["seconds"], rel=0.05)  # the ratio of its rows
    assert "speedup" in r.stdout


def test_api_mode_submits_one_batch_and_polls_it(tmp_path, folder, tiny_engine):
    from api import LocalStore, create_app
    from jobs.local import LocalBackend
    from test_api_support import live_server

    backend = LocalBackend(tiny_engine)
    app = create_app(backend, store=LocalStore(tmp_path / "store"))
    out = tmp_path / "out"
    try:
        with live_server(app) as url:
            args = [folder, "--to", "ja", "--out", out, "--api", url, "--memory", tmp_path / "tm.sqlite3",
                    "--max-tokens", 4, "--json", "--include", "*.srt", "--include", "*.json"]
            r = run(args)
            report = json.loads(r.stdout)
            assert r.exit_code == (1 if report["totals"]["failed"] else 0), r.output
            assert 5 <= report["totals"]["model_calls"] <= 5 * len(LADDER)
            srt = (out / "talk.srt").read_text()
            assert re.findall(r".*-->.*", srt) == re.findall(r".*-->.*", SRT)
            assert list(json.loads((out / "strings.json").read_text())) == ["menu", "count"]
            r = run(args)
            assert json.loads(r.stdout)["totals"]["model_calls"] == 0
            r = run([*args[:-4], "--model", "no-such-model"])
            assert r.exit_code == 1 and "no-such-model" in r.output
    finally:
        backend.close()


def test_bench_fidelity_runs(tmp_path, tiny_model_path):
    from cli.bench.fidelity import command as bench

    out = tmp_path / "fidelity.json"
    r = CliRunner().invoke(bench, ["--model", str(tiny_model_path), "--max-tokens", "3", "--speed-segments", "2",
                                   "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    run_ = json.loads(out.read_text())["runs"][tiny_model_path.name]
    formats = {Path(d["document"]).suffix for d in run_["documents"]}
    assert formats == {".md", ".html", ".srt", ".po", ".json"}
    assert all(d["intact"] for d in run_["documents"])  # noise is turned away; the sources stay whole
    assert run_["total"]["leaks"] == 0 and run_["speed"]["segments"] == 2
    assert "1st try" in r.stdout and "intact" in r.stdout


@pytest.mark.slow
def test_quick_start_sample_is_verified_translation_only(tmp_path, default_model_path):
    """The README's first command on the default model (the adversary): whatever
    it writes, the output keeps the sample's structure, carries no prompt text,
    and a rerun makes no model call."""
    from jobs.translation.prompts import PromptBuilder
    from jobs.translation.verify import leak_problems
    from jobs.translation import Glossary

    sample = Path(__file__).parents[1] / "examples" / "sample.md"
    doc = tmp_path / "sample.md"
    doc.write_text(sample.read_text())
    args = [doc, "--to", "fr", "--model", default_model_path, "--memory", tmp_path / "tm.sqlite3", "--json"]
    r = run(args)
    report = json.loads(r.stdout)
    out = (tmp_path / "sample.fr.md").read_text()
    src = sample.read_text()
    assert md_structure(out) == md_structure(src)
    head = out.splitlines()[:4]
    assert head[0] == head[2] == "---" and head[1].startswith("title: ") and head[3] == ""  # front matter
    leaks = PromptBuilder(None, "fr", Glossary(), "base").leaks()
    assert leak_problems(src, out, leaks) == []
    assert not [b for _, b in leaks.pairs if b in out]  # no example, not even a short one, copied whole
    for bad in report["files"][0]["failed"]:
        assert bad["segment"] in out
    t = report["totals"]
    assert t["accepted_first_try"] + t["accepted_after_retry"] + t["failed"] == t["unique_segments"]
    assert t["accepted_first_try"] + t["accepted_after_retry"] > 0  # it does translate
    r = run(args)
    assert json.loads(r.stdout)["totals"]["model_calls"] == 0
