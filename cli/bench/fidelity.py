"""`llamaq bench fidelity`: documents of every supported format translated by
the real pipeline (verification and retry ladder included) with one model.

Reports segments accepted on the first try, after a retry, and left in
source; documents whose output has the same structure as their source (the
format's own skeleton: markdown-it-py tokens, html.parser tags, cues, entries,
keys); prompt
text found anywhere in the outputs (an independent scan of whole documents);
and the speed of the batched pipeline against the same jobs sent one at a
time to the same engine (first attempts on a subset, same run)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from jobs.translation import Translator

from .util import print_table, write_json

DOCS = Path(__file__).resolve().parents[2] / "examples" / "fidelity"


@click.command("fidelity")
@click.option("--model", type=click.Path(dir_okay=False), help="GGUF model (default: the bundled model).")
@click.option("--docs", type=click.Path(exists=True, file_okay=False, path_type=Path), default=DOCS,
              show_default=True, help="Folder of documents, one per format or more.")
@click.option("--to", "tgt", default="fr", show_default=True)
@click.option("--from", "src", default="en", show_default=True)
@click.option("--parallel", type=click.IntRange(1, 256), default=16, show_default=True)
@click.option("--max-tokens", type=click.IntRange(1), help="Cap on generated tokens per segment.")
@click.option("--speed-segments", type=click.IntRange(0), default=12, show_default=True,
              help="Segments for the speed comparison (0: skip it).")
@click.option("--threads", type=click.IntRange(1), help="CPU threads (default: the engine's; 1 is the fair "
              "choice on a machine others load: spinning thread pools stall under contention).")
@click.option("--speed-only", is_flag=True, help="Only the speed comparison.")
@click.option("--n-gpu-layers", type=int, default=0, show_default=True)
@click.option("--out", "out_path", default="bench-results/fidelity.json", show_default=True,
              help="JSON file; each model's run is kept under its name.")
def command(model, docs, tgt, src, parallel, max_tokens, speed_segments, threads, speed_only, n_gpu_layers,
            out_path):
    """Translation fidelity of the verified pipeline on real-ish documents."""
    from engine import Engine, EngineConfig
    from engine.config import default_model_path
    from jobs.formats import format_for
    from jobs.translation import EngineSubmitter, FileJob, translate_documents
    from jobs.translation.verify import leak_problems

    model_path = Path(model) if model else default_model_path()
    files = sorted(p for p in docs.iterdir() if p.is_file() and not p.name.startswith("."))
    jobs = [FileJob(p.name, p.read_text(encoding="utf-8"), format_for(p)) for p in files]
    eng = Engine(EngineConfig(model_path=model_path, n_parallel=parallel, n_gpu_layers=n_gpu_layers,
                              n_threads=threads))
    try:
        sub = EngineSubmitter(eng)
        tr = _Recording(sub, tgt=tgt, src=src, max_tokens=max_tokens)
        if speed_only:
            from jobs.translation.documents import parse_all

            parse_all(jobs)
            speed = _speed(eng, tr, jobs, speed_segments)
            click.echo(f"speed on {speed['segments']} segments: batched {speed['batched_s']:.2f}s, one at a time "
                       f"{speed['one_at_a_time_s']:.2f}s -> {speed['ratio']:.2f}x")
            write_json(out_path, "fidelity-speed", {"model": model_path.name, "threads": threads, "speed": speed})
            return
        t0 = time.perf_counter()
        results = translate_documents(jobs, tr)
        seconds = time.perf_counter() - t0
        calls, style = sub.calls, tr.prompts.style
        speed = _speed(eng, tr, jobs, speed_segments) if speed_segments else None
    finally:
        eng.close()

    leaks = tr.verifier.leaks
    rows, k = [], 0
    for j, r in zip(jobs, results):
        n = len(j.doc.segments) if j.doc else 0
        outs, k = tr.outcomes[k:k + n], k + n
        kept = {f["segment"] for f in r.failed}  # left in source: by verification, or by the format's render
        pairs = [(s, o) for s, o in zip(j.doc.segments if j.doc else [], outs) if o.text is not None and s.text not in kept]
        written = [o for _, o in pairs]
        intact = r.text is not None and j.fmt.skeleton(r.text) == j.fmt.skeleton(j.text)
        leaked = leak_problems(j.text, r.text or "", leaks)
        rows.append({"document": j.name, "segments": n, "first_try": sum(o.tries == 1 for o in written),
                     "after_retry": sum(o.tries > 1 for o in written), "from_memory": sum(o.tries == 0 for o in written),
                     "in_source": n - len(written), "unchanged": sum(o.text.strip() == s.text.strip() for s, o in pairs),
                     "intact": intact, "leaks": len(leaked),
                     "leak_details": leaked, "failed": r.failed})
    total = {key: sum(r[key] for r in rows) for key in ("segments", "first_try", "after_retry", "from_memory",
                                                         "in_source", "unchanged", "leaks")}
    total.update(document="TOTAL", intact=sum(r["intact"] for r in rows))
    accepted = (total["segments"] - total["in_source"]) / total["segments"] if total["segments"] else 0.0
    click.echo(f"model {model_path.name} ({style} prompt), {len(jobs)} documents -> {tgt}")
    print_table(rows + [total], [("document", "document", ""), ("segments", "segments", "d"),
                                 ("first_try", "1st try", "d"), ("after_retry", "retried", "d"),
                                 ("in_source", "in source", "d"), ("unchanged", "accepted as is", "d"),
                                 ("intact", "intact", ""),
                                 ("leaks", "leaks", "d")])
    click.echo(f"accepted {accepted:.0%} of segments; {total['intact']}/{len(rows)} documents intact; "
               f"{total['leaks']} leaks; {calls} model calls in {seconds:.1f}s")
    if speed:
        click.echo(f"speed on {speed['segments']} segments: batched {speed['batched_s']:.2f}s, one at a time "
                   f"{speed['one_at_a_time_s']:.2f}s -> {speed['ratio']:.2f}x")
    run = {"model": model_path.name, "prompt_style": style, "to": tgt, "from": src, "seconds": round(seconds, 2),
           "model_calls": calls, "accepted": round(accepted, 4), "documents": rows, "total": total,
           "speed": speed}
    path = Path(out_path)
    runs = {}
    if path.exists():
        try:
            runs = json.loads(path.read_text()).get("runs", {})
        except (ValueError, AttributeError):
            runs = {}
    runs[model_path.name] = run
    write_json(path, "fidelity", {"runs": runs})


class _Recording(Translator):
    """Keeps the per-segment outcomes (tries) that the document results summarise away."""

    outcomes: list = []

    def translate(self, segments, on_progress=None):
        self.outcomes = super().translate(segments, on_progress)
        return self.outcomes


def _speed(eng, tr, jobs, n: int) -> dict:
    """First attempts of n segments: one at a time (each waits for the previous),
    then all at once through the pipeline, on the same engine (prefix cache warm
    from the start for both: the instructions are what every prompt shares)."""
    from jobs.translation import EngineSubmitter
    from jobs.translation.pipeline import Rung

    segs = [s for j in jobs if j.doc for s in j.doc.segments][:n]
    t0 = time.perf_counter()
    Translator(_OneAtATime(eng), tgt=tr.tgt, src=tr.src, ladder=(Rung(),), max_tokens=tr.max_tokens).translate(segs)
    t_one = time.perf_counter() - t0
    batched = Translator(EngineSubmitter(eng), tgt=tr.tgt, src=tr.src, ladder=(Rung(),), max_tokens=tr.max_tokens)
    t0 = time.perf_counter()
    batched.translate(segs)
    t_batched = time.perf_counter() - t0
    return {"segments": len(segs), "batched_s": round(t_batched, 3), "one_at_a_time_s": round(t_one, 3),
            "ratio": round(t_one / t_batched, 3) if t_batched else 0.0}


class _OneAtATime:
    """The engine driven segment by segment: one request, its answer, the next."""

    def __init__(self, eng):
        from jobs.translation import EngineSubmitter

        self.inner = EngineSubmitter(eng)
        self.model_id, self.has_chat_template, self.calls = self.inner.model_id, self.inner.has_chat_template, 0

    def run(self, jobs):
        for i, job in enumerate(jobs):
            for _, c in self.inner.run([job]):
                self.calls += 1
                yield i, c
