"""`llamaq bench translate`: a many-segment document translated in embedded
mode (every segment submitted at once, batched, shared-prefix reuse) against
the same prompts one at a time through llama-cpp-python's high-level
Llama.create_completion, same model, same run."""

from __future__ import annotations

import json
import os
import platform
import random
import time
from pathlib import Path

import click

_SUBJECTS = ["The worker", "Each job", "The queue", "A batch", "The server", "This guide", "The model",
             "Every request", "The cache", "A translation", "The scheduler", "Our team"]
_VERBS = ["processes", "stores", "checks", "sends", "receives", "updates", "keeps", "explains", "measures",
          "retries", "reports", "reuses"]
_OBJECTS = ["the results", "a small file", "the settings", "each document", "the log", "new messages",
            "the whole folder", "every segment", "the error", "old records", "the token count", "the output"]
_ENDS = ["before noon.", "in a few seconds.", "when it is ready.", "for every user.", "without delay.",
         "after the restart.", "on each machine.", "at the end of the day."]


def make_document(n: int, seed: int = 0) -> str:
    """n distinct short paragraphs as Markdown (headings every 20)."""
    rng = random.Random(seed)
    seen, parts = set(), []
    while len(seen) < n:
        s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_ENDS)}"
        if s in seen:
            continue
        seen.add(s)
        if len(seen) % 20 == 1:
            parts.append(f"## Part {len(seen) // 20 + 1}: {s[:-1]}")
        else:
            parts.append(s)
    return "\n\n".join(parts) + "\n"


def _row(name, secs, segs, toks):
    return {"mode": name, "seconds": round(secs, 3), "segments": segs, "completion_tokens": toks,
            "tokens_per_s": round(toks / secs, 2) if secs else 0.0,
            "segments_per_s": round(segs / secs, 3) if secs else 0.0}


@click.command("translate")
@click.option("--model", type=click.Path(dir_okay=False), help="GGUF model (default: the bundled model).")
@click.option("--segments", type=click.IntRange(1), default=500, show_default=True)
@click.option("--to", "tgt", default="ja", show_default=True)
@click.option("--max-tokens", type=click.IntRange(1), default=32, show_default=True,
              help="Cap on generated tokens per segment (both modes).")
@click.option("--parallel", type=click.IntRange(1, 256), default=16, show_default=True)
@click.option("--n-gpu-layers", type=int, default=0, show_default=True)
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("bench-results/translate.json"), show_default=True)
def command(model, segments, tgt, max_tokens, parallel, n_gpu_layers, out_path):
    """Embedded batched translation vs one-at-a-time create_completion."""
    from engine import Engine, EngineConfig
    from engine.config import default_model_path
    from jobs.formats import format_named
    from jobs.placeholders import protect
    from jobs.translation import EngineSubmitter, Translator
    from jobs.translation.pipeline import max_tokens_for

    model_path = Path(model) if model else default_model_path()
    doc = format_named("md").parse(make_document(segments))
    segs = doc.segments
    click.echo(f"model {model_path.name}, {len(segs)} segments -> {tgt}, max {max_tokens} tokens each", err=True)

    # -- llamaq embedded: the real pipeline, all segments at once --
    eng = Engine(EngineConfig(model_path=model_path, n_parallel=parallel, n_gpu_layers=n_gpu_layers))
    try:
        sub = EngineSubmitter(eng)
        tr = Translator(sub, tgt=tgt, max_tokens=max_tokens)
        # the same prompts, for the baseline (first attempts)
        prompts = []
        for s in segs:
            p = tr.prompts.build(protect(s.text.strip(), s.markup).text)
            text = sub.chat.render(p.messages) if p.messages is not None else p.text
            stop = p.stop + (sub.chat.stop if p.messages is not None else [])
            prompts.append((text, stop, min(max_tokens, max_tokens_for(s.text))))
        t0 = time.perf_counter()
        tokens = [0]
        outs = tr.translate(segs, on_progress=lambda p: tokens.__setitem__(0, p.completion_tokens))
        t_engine = time.perf_counter() - t0
        stats = eng.stats()
        style = tr.prompts.style
    finally:
        eng.close()
    failed = sum(o.text is None for o in outs)
    engine_row = _row("llamaq embedded (batched)", t_engine, len(segs), tokens[0])
    engine_row.update({"model_calls": sub.calls, "failed_checks": failed,
                       "prompt_tokens_computed": stats.prompt_tokens_computed,
                       "prompt_tokens_reused": stats.prompt_tokens_reused})

    # -- baseline: one segment at a time through the high-level API --
    from llama_cpp import Llama

    llm = Llama(model_path=str(model_path), n_ctx=4096, n_gpu_layers=n_gpu_layers, verbose=False)
    t0 = time.perf_counter()
    base_tokens = 0
    for text, stop, mt in prompts:
        r = llm.create_completion(text, max_tokens=mt, temperature=0.0, stop=stop or None)
        base_tokens += r["usage"]["completion_tokens"]
    t_base = time.perf_counter() - t0
    del llm
    base_row = _row("llama-cpp-python create_completion, one at a time", t_base, len(prompts), base_tokens)

    ratio = t_base / t_engine if t_engine else 0.0
    rows = [engine_row, base_row]
    click.echo(f"{'mode':<52} {'seconds':>9} {'segments':>9} {'gen tok':>8} {'tok/s':>8} {'seg/s':>7}")
    for r in rows:
        click.echo(f"{r['mode']:<52} {r['seconds']:>9.2f} {r['segments']:>9} {r['completion_tokens']:>8} "
                   f"{r['tokens_per_s']:>8.1f} {r['segments_per_s']:>7.2f}")
    click.echo(f"speedup (baseline time / embedded time): {ratio:.2f}x   prompt style: {style}, "
               f"prompt tokens reused from cache: {stats.prompt_tokens_reused}, computed: "
               f"{stats.prompt_tokens_computed}, segments failing checks: {failed}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps({
        "bench": "translate", "model": model_path.name, "segments": len(segs), "to": tgt,
        "max_tokens": max_tokens, "parallel": parallel, "prompt_style": style, "rows": rows,
        "speedup": round(ratio, 3), "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }, indent=2) + "\n")
    click.echo(f"wrote {out_path}", err=True)
