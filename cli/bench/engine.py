"""`llamaq bench engine`: the engine against one-request-at-a-time and the raw ceiling.

(a) sequential: requests one at a time through llama-cpp-python's high-level
    Llama.create_completion, what a simple one-request server does;
(b) the engine with 1, 16 and 64 concurrent clients, with its per-step time
    split into decode, sampling and other host work; with --sampler both, also
    with every sequence sampled through llama.cpp's chain (the engine before
    its fast paths), in the same run; --temperature samples instead of greedy;
(c) the raw ceiling: a bare llama_batch/llama_decode/argmax loop at the same
    batch sizes with no scheduling at all; its sampling time per step, one numpy
    argmax over the step's logits, is the floor for host sampling.
Greedy decoding, distinct prompts, EOS ignored so every request generates the
same number of tokens."""

from __future__ import annotations

import threading
import time

import click
import llama_cpp
import numpy as np

from cli.bench.util import out_option, pct, print_table, write_json
from engine import Engine, EngineConfig, Request, SamplingParams
from engine.batch import Batch
from engine.model import Model

WORDS = (
    "river mountain city lantern quiet engine paper garden window silver market winter harbor "
    "candle forest letter bridge meadow thunder violin"
).split()


def make_prompts(model: Model, n: int, n_tokens: int) -> list[list[int]]:
    """n prompts of exactly n_tokens tokens that differ from their first word on."""
    prompts = []
    for i in range(n):
        words = [WORDS[(i * 7 + j * (i + 3)) % len(WORDS)] for j in range(n_tokens * 2)]
        toks = model.tokenize(f"Request {i}: " + " ".join(words))
        prompts.append(toks[:n_tokens])
    return prompts


def run_sequential(path: str, prompts: list[list[int]], gen: int, threads: int | None) -> dict:
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=1024, n_threads=threads, n_batch=512, verbose=False)
    eog = {t: -1e9 for t in [llm.token_eos()]}
    ttfts, total_tokens = [], 0
    start = time.perf_counter()
    for p in prompts:
        t0 = time.perf_counter()
        first = None
        for chunk in llm.create_completion(p, max_tokens=gen, temperature=0.0, stream=True, logit_bias=eog):
            if first is None:
                first = time.perf_counter() - t0
            total_tokens += 1
        ttfts.append((first or 0) * 1000)
    wall = time.perf_counter() - start
    llm.close()
    return {"mode": "sequential (Llama.create_completion)", "concurrency": 1, "requests": len(prompts),
            "tokens": total_tokens, "wall_s": wall, "tok_s": total_tokens / wall,
            "ttft_p50_ms": pct(ttfts, 50), "ttft_p95_ms": pct(ttfts, 95)}


def run_clients(eng: Engine, prompts: list, concurrency: int, params: SamplingParams) -> tuple[list, float]:
    """`concurrency` clients, each sending its share of prompts back to back:
    (results, wall seconds)."""
    results, lock = [], threading.Lock()

    def client(share: list) -> None:
        for p in share:
            r = eng.submit(Request(p, params)).result()
            with lock:
                results.append(r)

    threads = [threading.Thread(target=client, args=(prompts[i::concurrency],)) for i in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - start


def run_engine(eng: Engine, prompts: list[list[int]], gen: int, concurrency: int, temperature: float) -> dict:
    params = SamplingParams(temperature=temperature, max_tokens=gen, ignore_eos=True)
    before = eng.stats()
    results, wall = run_clients(eng, prompts, concurrency, params)
    after = eng.stats()
    tokens = sum(r.usage.completion_tokens for r in results)
    ttfts = [r.timings.ttft_ms for r in results]
    per_step = lambda field: (getattr(after, field) - getattr(before, field)) / max(1, after.steps - before.steps)  # noqa: E731
    decode, sample, step = per_step("decode_ms"), per_step("sample_ms"), per_step("step_ms")
    sample_cpu, host_cpu = per_step("sample_cpu_ms"), per_step("step_cpu_ms") - per_step("decode_cpu_ms")
    mode = "engine" if eng.config.fast_sampling else "engine, llama.cpp chain"
    return {"mode": mode, "concurrency": concurrency, "requests": len(results), "tokens": tokens,
            "wall_s": wall, "tok_s": tokens / wall, "ttft_p50_ms": pct(ttfts, 50), "ttft_p95_ms": pct(ttfts, 95),
            "decode_ms": decode, "sample_ms": sample, "other_ms": step - decode - sample, "host_ms": step - decode,
            "sample_cpu_ms": sample_cpu, "other_cpu_ms": host_cpu - sample_cpu, "host_cpu_ms": host_cpu}


def run_raw(model: Model, prompts: list[list[int]], gen: int, n_seq: int, threads: int | None) -> dict:
    """Bare loop: prefill all prompts in one batch, then one token per sequence per step,
    each an argmax over the step's logits: its sampling time is one read of the logits,
    the least any sampler can spend on the host."""
    n_prompt, n_vocab = len(prompts[0]), model.n_vocab
    ctx = model.new_context(n_ctx=n_seq * (n_prompt + gen) + 64, n_batch=max(512, n_seq * n_prompt),
                            n_seq_max=n_seq, n_threads=threads)
    batch = Batch(max(512, n_seq * n_prompt))
    decode_s = sample_s = 0.0

    def step(tokens: list[list[int]], pos: int) -> list[int]:
        nonlocal decode_s, sample_s
        t0 = time.perf_counter()
        batch.clear()
        for s in range(n_seq):
            batch.add(tokens[s], pos, s, True)
        t1 = time.perf_counter()
        assert llama_cpp.llama_decode(ctx, batch.as_llama()) == 0
        llama_cpp.llama_synchronize(ctx)
        t2 = time.perf_counter()
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits(ctx), shape=(n_seq, n_vocab))
        last = logits.argmax(axis=1).tolist()
        decode_s += t2 - t1
        sample_s += time.perf_counter() - t2
        return last

    try:
        start = time.perf_counter()
        last = step(prompts[:n_seq], 0)
        ttft = (time.perf_counter() - start) * 1000
        for i in range(1, gen):
            last = step([[t] for t in last], n_prompt + i - 1)
        wall = time.perf_counter() - start
    finally:
        llama_cpp.llama_free(ctx)
    tokens = n_seq * gen
    return {"mode": "raw loop (ceiling)", "concurrency": n_seq, "requests": n_seq, "tokens": tokens,
            "wall_s": wall, "tok_s": tokens / wall, "ttft_p50_ms": ttft, "ttft_p95_ms": ttft,
            "decode_ms": decode_s * 1000 / gen, "sample_ms": sample_s * 1000 / gen,
            "host_ms": (wall - decode_s) * 1000 / gen}


def progress(row: dict) -> dict:
    """Each row as soon as it is measured (a run cut short still shows what it had)."""
    click.echo(f"  {row['mode']}, {row['concurrency']} concurrent: {row['tok_s']:.1f} tok/s", err=True)
    return row


@click.command("engine")
@click.option("--model", "-m", envvar="LLAMAQ_MODEL", help="GGUF file (default: bundled Gemma 3 270M).")
@click.option("--prompt-tokens", default=64, show_default=True)
@click.option("--gen-tokens", default=32, show_default=True)
@click.option("--concurrency", "levels", default="1,16,64", show_default=True, help="Comma-separated levels.")
@click.option("--requests", "n_requests", default=16, show_default=True, help="Requests per engine level (at least the level).")
@click.option("--threads", type=int, default=None, help="CPU threads (default: all cores).")
@click.option("--n-gpu-layers", type=int, default=0, show_default=True)
@click.option("--sampler", type=click.Choice(["fast", "chain", "both"]), default="both", show_default=True,
              help="fast: argmax or top-k draw over the logits in numpy; chain: llama.cpp's sampler chain for every sequence.")
@click.option("--temperature", type=float, default=0.0, show_default=True,
              help="Engine rows' temperature (with the default top_k 40, top_p 0.95, min_p 0.05 when > 0).")
@click.option("--no-baselines", is_flag=True, help="Skip the sequential and raw-loop rows.")
@out_option("engine")
def command(model, prompt_tokens, gen_tokens, levels, n_requests, threads, n_gpu_layers, sampler, temperature, no_baselines, out):
    """Engine throughput vs sequential requests and the raw batch-loop ceiling,
    with the engine's time per step: decode, sampling, other host work."""
    levels = [int(x) for x in levels.split(",")]
    variants = {"fast": [True], "chain": [False], "both": [False, True]}[sampler]
    configs = [EngineConfig(model_path=model, n_parallel=max(levels), n_threads=threads, n_gpu_layers=n_gpu_layers,
                            n_batch=max(512, max(levels)), fast_sampling=fast,
                            n_ctx=max(4096, max(levels) * (prompt_tokens + gen_tokens) * 2)) for fast in variants]
    rows = []
    for cfg in configs:
        eng = Engine(cfg)
        path = eng.model.path
        prompts = make_prompts(eng.model, max(n_requests, max(levels)) * 2, prompt_tokens)
        eng.generate(prompts[-1], temperature=0, max_tokens=4)  # warm-up
        try:
            for c in levels:
                rows.append(progress(run_engine(eng, prompts[: max(n_requests, c)], gen_tokens, c, temperature)))
                if cfg is configs[-1] and not no_baselines:
                    rows.append(progress(run_raw(eng.model, prompts[:c], gen_tokens, c, threads)))
            if cfg is configs[-1] and n_gpu_layers == 0 and not no_baselines:
                rows.insert(0, run_sequential(path, prompts[: max(4, n_requests // 2)], gen_tokens, threads))
        finally:
            eng.close()
    how = f"temperature {temperature} (engine rows)" if temperature else "greedy"
    click.echo(f"model {path.name}; {prompt_tokens}-token prompts, {gen_tokens} generated tokens, {how}")
    seq = next((r["tok_s"] for r in rows if r["mode"].startswith("sequential")), None)
    raw = {r["concurrency"]: r for r in rows if r["mode"].startswith("raw")}
    chain = {r["concurrency"]: r["tok_s"] for r in rows if r["mode"].endswith("chain")}
    for r in rows:
        engine_row = r["mode"].startswith("engine")
        r["vs_sequential"] = r["tok_s"] / seq if seq else None
        base = raw.get(r["concurrency"]) if engine_row else None
        r["vs_raw"] = r["tok_s"] / base["tok_s"] if base else None
        r["sample_vs_floor"] = r["sample_ms"] / base["sample_ms"] if base else None
        r["vs_chain"] = r["tok_s"] / chain[r["concurrency"]] if r["mode"] == "engine" and chain else None
    print_table(rows, [("mode", "mode", ""), ("concurrency", "conc", "d"), ("requests", "reqs", "d"),
                       ("tok_s", "gen tok/s", ".1f"), ("ttft_p50_ms", "TTFT p50 ms", ".0f"),
                       ("decode_ms", "decode ms/step", ".2f"), ("sample_ms", "sample ms/step", ".2f"),
                       ("other_ms", "other host ms/step", ".2f"), ("host_cpu_ms", "host CPU ms/step", ".2f"),
                       ("sample_cpu_ms", "sample CPU ms/step", ".2f"), ("vs_sequential", "x sequential", ".2f"),
                       ("vs_raw", "x raw", ".2f"), ("vs_chain", "x chain", ".2f"),
                       ("sample_vs_floor", "sample x floor", ".2f")])
    write_json(out, "engine", {"model": str(path), "prompt_tokens": prompt_tokens, "gen_tokens": gen_tokens,
                               "temperature": temperature,
                               "rows": rows})
