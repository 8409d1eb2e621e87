"""`llamaq bench prefix`: shared-prefix KV reuse against recomputing every prompt.

(1) time to first token of a request whose 1,024-token prefix is cached, vs cold;
(2) 16 concurrent requests sharing a 1,024-token system prompt, each with its own
    32-token suffix and 16 generated tokens: prompt tokens computed and wall time,
    with reuse vs without (cache_prompt false)."""

from __future__ import annotations

import time

import click

from cli.bench.engine import make_prompts
from cli.bench.util import out_option, print_table, write_json
from engine import Engine, EngineConfig, Request, SamplingParams


def _ttft(eng: Engine, prompt: list[int], cache: bool) -> float:
    r = eng.submit(Request(prompt, SamplingParams(temperature=0, max_tokens=1), cache_prompt=cache)).result()
    return r.timings.ttft_ms


def _concurrent(eng: Engine, prompts: list[list[int]], gen: int, cache: bool) -> dict:
    before = eng.stats()
    start = time.perf_counter()
    params = SamplingParams(temperature=0, max_tokens=gen, ignore_eos=True)
    handles = [eng.submit(Request(p, params, cache_prompt=cache)) for p in prompts]
    results = [h.result() for h in handles]
    wall = time.perf_counter() - start
    after = eng.stats()
    return {
        "wall_s": wall,
        "prompt_tokens": sum(r.usage.prompt_tokens for r in results),
        "computed": after.prompt_tokens_computed - before.prompt_tokens_computed,
        "reused": after.prompt_tokens_reused - before.prompt_tokens_reused,
        "cached_tokens": sum(r.usage.cached_tokens for r in results),
    }


@click.command("prefix")
@click.option("--model", "-m", envvar="LLAMAQ_MODEL", help="GGUF file (default: bundled Gemma 3 270M).")
@click.option("--prefix-tokens", default=1024, show_default=True)
@click.option("--suffix-tokens", default=32, show_default=True)
@click.option("--requests", "n_requests", default=16, show_default=True)
@click.option("--gen-tokens", default=16, show_default=True)
@click.option("--threads", type=int, default=None)
@click.option("--n-gpu-layers", type=int, default=0, show_default=True)
@out_option("prefix")
def command(model, prefix_tokens, suffix_tokens, n_requests, gen_tokens, threads, n_gpu_layers, out):
    """Prefix-cache reuse: TTFT cached vs cold; N concurrent requests sharing a long prefix."""
    per_request = prefix_tokens + suffix_tokens + gen_tokens + 8
    eng = Engine(EngineConfig(model_path=model, n_parallel=n_requests, n_seq_cache=n_requests,
                              n_ctx=per_request * (n_requests + 2), n_batch=512, n_threads=threads,
                              n_gpu_layers=n_gpu_layers))
    try:
        m = eng.model
        long = make_prompts(m, 1, (prefix_tokens + 1) * 2)[0][: prefix_tokens + 1]
        prefix = long[:prefix_tokens]
        suffixes = [p[1 : suffix_tokens + 1] for p in make_prompts(m, n_requests + 2, suffix_tokens + 1)]
        click.echo(f"model {m.path.name}; prefix {prefix_tokens} tokens, suffix {suffix_tokens}, {n_requests} requests")
        eng.generate(suffixes[-1], temperature=0, max_tokens=2)  # warm-up

        cold = _ttft(eng, prefix + suffixes[0], cache=False)
        _ttft(eng, prefix + suffixes[1], cache=True)  # leaves the prefix in the cache
        warm = _ttft(eng, prefix + suffixes[0], cache=True)

        prompts = [prefix + s for s in suffixes[:n_requests]]
        eng._sched.evict_all()  # both runs start from an empty cache
        without = _concurrent(eng, prompts, gen_tokens, cache=False)
        eng._sched.evict_all()
        with_reuse = _concurrent(eng, prompts, gen_tokens, cache=True)
    finally:
        eng.close()

    rows = [
        {"case": f"TTFT, {prefix_tokens}-token prefix", "without": cold, "with": warm, "ratio": cold / warm, "unit": "ms"},
        {"case": f"{n_requests} concurrent: prompt tokens computed", "without": without["computed"],
         "with": with_reuse["computed"], "ratio": without["computed"] / max(1, with_reuse["computed"]), "unit": "tokens"},
        {"case": f"{n_requests} concurrent: wall time", "without": without["wall_s"], "with": with_reuse["wall_s"],
         "ratio": without["wall_s"] / with_reuse["wall_s"], "unit": "s"},
    ]
    print_table(rows, [("case", "case", ""), ("without", "without reuse", ".1f"), ("with", "with reuse", ".1f"),
                       ("unit", "unit", ""), ("ratio", "gain (x)", ".1f")])
    bound = prefix_tokens + n_requests * (suffix_tokens + 1)
    click.echo(f"target: computed <= {bound} (prefix + {n_requests} x (suffix + 1)): "
               f"{'met' if with_reuse['computed'] <= bound else 'NOT met'}")
    write_json(out, "prefix", {"model": str(m.path), "rows": rows, "without": without, "with": with_reuse,
                               "ttft_cold_ms": cold, "ttft_cached_ms": warm, "target_computed_max": bound})
