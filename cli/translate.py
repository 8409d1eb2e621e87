"""`llamaq translate`: translate files and folders, keeping each format's structure."""

from __future__ import annotations

import fnmatch
import json
import os
import sys
import time
from pathlib import Path

import click

from jobs.formats import format_for, format_named, supported_suffixes
from jobs.translation import (
    ApiError,
    ApiSubmitter,
    EngineSubmitter,
    FileJob,
    Glossary,
    Progress,
    TranslationMemory,
    Translator,
    default_path,
    load_glossary,
    translate_documents,
)
from jobs.translation.documents import write_atomic
from jobs.translation.memory import memory_key
from jobs.translation.prompts import PROMPT_VERSION

SKIP_DIRS = {".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv", ".tox"}


def _suffixed(path: Path, suffix: str) -> Path:
    """docs/a.md + .ja -> docs/a.ja.md"""
    return path.with_name(path.stem + suffix + path.suffix)


def _matches(rel: str, globs: tuple[str, ...]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(name, g) for g in globs)


def discover(paths: tuple[str, ...], *, out_dir: Path | None, suffix: str | None, include: tuple[str, ...],
             exclude: tuple[str, ...], fmt_name: str | None) -> list[tuple[Path, Path]]:
    """(input file, output file) pairs; raises click.BadParameter for bad paths."""
    known = set(supported_suffixes())
    pairs: list[tuple[Path, Path]] = []
    out_resolved = out_dir.resolve() if out_dir else None
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise click.BadParameter(f"{raw}: no such file or folder", param_hint="PATH")
        if p.is_file():
            if not fmt_name:
                try:
                    format_for(p)
                except ValueError as e:
                    raise click.BadParameter(str(e), param_hint="PATH") from None
            out = (out_dir / p.name) if out_dir else _suffixed(p, suffix or "")
            pairs.append((p, out))
            continue
        for root, dirs, files in os.walk(p):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")
                             and not (out_resolved and Path(root, d).resolve() == out_resolved))
            for f in sorted(files):
                fp = Path(root, f)
                rel = fp.relative_to(p).as_posix()
                if fp.suffix.lower() not in known:
                    continue
                if suffix and fp.stem.endswith(suffix):  # an earlier run's output
                    continue
                if include and not _matches(rel, include):
                    continue
                if exclude and _matches(rel, exclude):
                    continue
                out = (out_dir / rel) if out_dir else _suffixed(fp, suffix or "")
                pairs.append((fp, out))
    for src, out in pairs:
        if src.resolve() == out.resolve():
            raise click.BadParameter(f"{src}: output would overwrite the input; use --out or --suffix")
    return pairs


class Bar:
    """A one-line progress bar on a terminal (stderr); silent otherwise."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.last = 0.0
        self.started = time.monotonic()

    def __call__(self, p: Progress, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last < 0.1 and p.done < p.total):
            return
        self.last = now
        width = 30
        frac = p.done / p.total if p.total else 1.0
        fresh = p.done - p.reused
        elapsed = now - self.started
        eta = (elapsed / fresh * (p.total - p.done)) if fresh > 0 else None
        eta_s = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta is not None else "--:--:--"
        line = (f"\r[{'#' * int(frac * width):<{width}}] {p.done}/{p.total} segments"
                f"  {p.tokens_per_s:6.1f} tok/s  ETA {eta_s}")
        if p.failed:
            line += f"  {p.failed} failed"
        sys.stderr.write(line)
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _make_submitter(model: str | None, api: str | None, api_key: str | None, parallel: int, bar: Bar):
    if api:
        def on_poll(batch: dict) -> None:
            counts = batch.get("request_counts") or {}
            total = counts.get("total") or 0
            bar(Progress(done=counts.get("completed", 0) + counts.get("failed", 0), total=total))

        return ApiSubmitter(api, model=model, api_key=api_key, on_poll=on_poll), None
    from engine import Engine, EngineConfig
    from engine.errors import EngineError

    try:
        eng = Engine(EngineConfig(model_path=model, n_parallel=parallel))
    except EngineError as e:
        raise click.ClickException(f"cannot load model: {e}") from None
    return EngineSubmitter(eng), eng


def _model_id_offline(model: str | None, api: str | None) -> str:
    if api:
        return model or ""
    from engine.config import default_model_path

    return Path(model).stem if model else default_model_path().stem


@click.command("translate")
@click.argument("paths", nargs=-1, required=True)
@click.option("--to", "tgt", required=True, metavar="LANG", help="Target language (code like ja, de, pt-br, or a name).")
@click.option("--from", "src", metavar="LANG", help="Source language (default: not stated to the model).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write translations into this folder, mirroring the inputs' layout.")
@click.option("--suffix", help="Write next to each input with this suffix before the extension "
              "(default: .LANG, so README.md -> README.ja.md).")
@click.option("--glossary", type=click.Path(exists=True, dir_okay=False), help="CSV of source,target[,lang] terms.")
@click.option("--model", help="GGUF model path (embedded) or model name (--api). Default: the bundled model.")
@click.option("--api", metavar="URL", help="Submit one batch to a llamaq server and poll it, instead of "
              "running the model here.")
@click.option("--api-key", envvar="LLAMAQ_API_KEY", help="Bearer token for --api (env LLAMAQ_API_KEY).")
@click.option("--include", multiple=True, metavar="GLOB", help="Only files matching (repeatable).")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Skip files matching (repeatable).")
@click.option("--format", "fmt_name", metavar="FMT",
              help="Format for stdin ('-'), or to override suffix detection: txt, md, srt, vtt, po, json, html.")
@click.option("--memory", "memory_path", type=click.Path(dir_okay=False, path_type=Path),
              help=f"Translation memory file (default: {default_path()}).")
@click.option("--no-memory", is_flag=True, help="Neither read nor write the translation memory.")
@click.option("--retry-failed", is_flag=True, help="Try again the segments an earlier run could not translate "
              "(by default the memory answers them: they stay in source and are reported again).")
@click.option("--prompt-style", type=click.Choice(["auto", "chat", "base"]), default="auto", show_default=True,
              help="chat: system+user messages through the chat template; base: few-shot text for base models.")
@click.option("--max-tokens", type=click.IntRange(1), help="Cap on generated tokens per segment.")
@click.option("--parallel", type=click.IntRange(1, 256), default=16, show_default=True,
              help="Sequences decoded at once (embedded mode).")
@click.option("--dry-run", is_flag=True, help="List what would be translated; load no model.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report.")
def command(paths, tgt, src, out_dir, suffix, glossary, model, api, api_key, include, exclude, fmt_name,
            memory_path, no_memory, retry_failed, prompt_style, max_tokens, parallel, dry_run, as_json):
    """Translate PATH... (files or folders, recursively; '-' reads stdin and writes stdout)
    into --to LANG, keeping each document's structure."""
    if out_dir and suffix:
        raise click.UsageError("use either --out or --suffix, not both")
    if "-" in paths and len(paths) > 1:
        raise click.UsageError("'-' (stdin) cannot be combined with other paths")
    if suffix is None and not out_dir:
        suffix = "." + tgt
    if suffix is not None and not suffix.strip():
        raise click.BadParameter("must not be empty", param_hint="--suffix")
    try:
        fmt_override = format_named(fmt_name) if fmt_name else None
        gloss = load_glossary(glossary, tgt) if glossary else Glossary()
    except ValueError as e:
        raise click.BadParameter(str(e)) from None

    stdin_mode = paths == ("-",)
    if stdin_mode:
        try:  # bytes: the text layer would decode by the locale (or with surrogates) and mend line endings
            text = sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError as e:
            raise click.ClickException(f"stdin is not UTF-8 text ({e.reason} at byte {e.start})") from None
        jobs = [FileJob("-", text, fmt_override or format_named("txt"))]
    else:
        pairs = discover(paths, out_dir=out_dir, suffix=None if out_dir else suffix, include=include,
                         exclude=exclude, fmt_name=fmt_name)
        jobs = []
        for src_path, out in pairs:
            try:
                text = src_path.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                jobs.append(FileJob(str(src_path), "", fmt_override or format_for(src_path), out,
                                    error="not UTF-8 text"))
                continue
            jobs.append(FileJob(str(src_path), text, fmt_override or format_for(src_path), out))
    report_stream = sys.stderr if stdin_mode else sys.stdout
    memory = TranslationMemory(None if no_memory else (memory_path or default_path()))

    if dry_run:
        _dry_run(jobs, memory, gloss, tgt, src, _model_id_offline(model, api), as_json, report_stream)
        return

    bar = Bar(enabled=sys.stderr.isatty() and not as_json)
    started = time.monotonic()
    try:
        submitter, eng = _make_submitter(model, api, api_key, parallel, bar)
    except ApiError as e:
        raise click.ClickException(str(e)) from None
    try:
        translator = Translator(submitter, tgt=tgt, src=src, glossary=gloss, memory=memory, style=prompt_style,
                                max_tokens=max_tokens, retry_failed=retry_failed)
        progress_holder: list[Progress] = []

        def on_progress(p: Progress) -> None:
            progress_holder[:] = [p]
            bar(p)

        try:
            results = translate_documents(jobs, translator, on_progress)
        except ApiError as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            bar.close()
            click.echo("interrupted: finished segments are in the translation memory; "
                       "run the same command again to resume", err=True)
            sys.exit(130)
        if progress_holder:
            bar(progress_holder[0], force=True)
        bar.close()
    finally:
        if eng is not None:
            eng.close()
        memory.close()

    for r, j in zip(results, jobs):
        if r.text is None:
            continue
        if stdin_mode:
            sys.stdout.flush()
            sys.stdout.buffer.write(r.text.encode("utf-8"))
            sys.stdout.buffer.flush()
        else:
            write_atomic(j.out, r.text)

    p = progress_holder[0] if progress_holder else Progress()
    totals = {
        "files": len(results),
        "files_failed": sum(1 for r in results if r.error or r.failed),
        "segments": sum(r.segments for r in results),
        "unique_segments": p.total,
        "reused_from_memory": sum(r.reused for r in results),
        "failed": sum(len(r.failed) for r in results),
        "accepted_first_try": p.first_try,
        "accepted_after_retry": p.retried,
        "warnings": sum(len(r.warnings) for r in results),
        "model_calls": submitter.calls,
        "completion_tokens": p.completion_tokens,
        "seconds": round(time.monotonic() - started, 3),
    }
    ok = totals["failed"] == 0 and not any(r.error for r in results)
    if as_json:
        report_stream.write(json.dumps({"ok": ok, "model": submitter.model_id, "to": tgt, "from": src,
                                        "totals": totals, "files": [r.to_dict() for r in results]},
                                       ensure_ascii=False, indent=2) + "\n")
    else:
        _summary(results, totals, report_stream)
    if not ok:
        sys.exit(1)


def _summary(results, totals: dict, stream) -> None:
    for r in results:
        if r.error:
            stream.write(f"error: {r.name}: {r.error}\n")
        for f in r.failed:
            stream.write(f"failed: {r.name}: {f['segment'][:60]!r}: {'; '.join(f['problems'])}\n")
        for w in r.warnings:
            stream.write(f"warning: {r.name}: {w['segment'][:60]!r}: {w['warning']}\n")
    stream.write(
        f"{totals['files']} files, {totals['segments']} segments ({totals['unique_segments']} distinct), "
        f"{totals['reused_from_memory']} reused from memory, {totals['accepted_first_try']} translated on the first "
        f"try, {totals['accepted_after_retry']} after a retry, {totals['failed']} failed (kept in source), "
        f"{totals['model_calls']} model calls, {totals['seconds']:.1f}s\n")


def _dry_run(jobs, memory, gloss, tgt, src, model_id, as_json, stream) -> None:
    from jobs.translation.documents import parse_all

    parse_all(jobs)
    files = []
    for j in jobs:
        if j.doc is None:
            files.append({"file": j.name, "out": str(j.out) if j.out else None, "error": j.error})
            continue
        keys = {}
        for s in j.doc.segments:
            for style in ("chat", "base"):
                keys.setdefault(memory_key(model=model_id, src=src, tgt=tgt, glossary=gloss.digest,
                                           prompt=PROMPT_VERSION + style, markup=s.markup, text=s.text.strip()),
                                s.text)
        known = memory.get_many(list(keys))
        reused = len({keys[k] for k in known})
        files.append({"file": j.name, "out": str(j.out) if j.out else None, "format": j.fmt.name,
                      "segments": len(j.doc.segments), "in_memory": reused})
    memory.close()
    if as_json:
        stream.write(json.dumps({"dry_run": True, "to": tgt, "from": src, "model": model_id, "files": files},
                                ensure_ascii=False, indent=2) + "\n")
        return
    for f in files:
        if f.get("error"):
            stream.write(f"{f['file']}: error: {f['error']}\n")
        else:
            stream.write(f"{f['file']} -> {f['out'] or '-'}  [{f['format']}] {f['segments']} segments, "
                         f"{f['in_memory']} in memory\n")
    stream.write(f"{len(files)} files, {sum(f.get('segments', 0) for f in files)} segments (dry run)\n")
