"""`llamaq bench serve`: N concurrent streaming chat clients over HTTP against
`llamaq serve` (in-process engine, started as a subprocess), compared with the
same load submitted straight to an in-process Engine in this process.

Reports request throughput, output tokens/s, TTFT and inter-token latency
p50/p99 for both, and the HTTP/in-process ratios."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click
import orjson

from cli.bench.util import out_option, pct, print_table, write_json

TOPICS = ["rivers", "bread", "clocks", "glaciers", "violins", "bridges", "owls", "copper", "tides", "maps",
          "lanterns", "ferns", "kites", "salt", "comets", "harbors"]


def make_messages(i: int, prompt_words: int) -> list[dict]:
    topic = TOPICS[i % len(TOPICS)]
    filler = " ".join(f"{topic} {j}" for j in range(max(1, prompt_words // 2)))
    return [{"role": "user", "content": f"Request {i}. Write about {topic}. Notes: {filler}"}]


@dataclass
class Sample:
    ttft: float  # seconds to the first text
    itl: list[float]  # seconds between later pieces of text
    tokens: int  # completion tokens
    latency: float


@dataclass
class Summary:
    mode: str
    requests: int
    concurrency: int
    duration_s: float
    request_throughput: float
    output_tok_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    itl_p50_ms: float
    itl_p99_ms: float
    completion_tokens: int
    errors: int = 0
    extra: dict = field(default_factory=dict)


def summarize(mode: str, samples: list[Sample], duration: float, concurrency: int, errors: int) -> Summary:
    toks = sum(s.tokens for s in samples)
    itl = [x for s in samples for x in s.itl]
    ttft = [s.ttft for s in samples]
    return Summary(mode, len(samples), concurrency, duration, len(samples) / duration, toks / duration,
                   pct(ttft, 50) * 1e3, pct(ttft, 99) * 1e3, pct(itl, 50) * 1e3, pct(itl, 99) * 1e3, toks, errors)


# --------------------------------------------------------------- in-process


def run_inprocess(engine, n: int, concurrency: int, max_tokens: int, prompt_words: int) -> tuple[list, float, int]:
    from engine import Request, SamplingParams

    from jobs.chat import chat_for

    chat = chat_for(engine)
    prompts = [chat.render(make_messages(i, prompt_words)) for i in range(n)]
    todo = iter(range(n))
    lock = threading.Lock()
    samples: list[Sample] = []

    def client() -> None:
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                return
            t0 = time.perf_counter()
            params = SamplingParams(temperature=0.0, max_tokens=max_tokens, stop=chat.stop)
            h = engine.submit(Request(prompts[i], params))
            stamps = [time.perf_counter() for d in h if d]
            r = h.result()
            end = time.perf_counter()
            s = Sample(stamps[0] - t0 if stamps else end - t0, [b - a for a, b in zip(stamps, stamps[1:])],
                       r.usage.completion_tokens, end - t0)
            with lock:
                samples.append(s)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return samples, time.perf_counter() - t0, 0


# --------------------------------------------------------------- over HTTP


async def _http_one(client, url: str, model: str, i: int, max_tokens: int, prompt_words: int) -> Sample:
    body = {"model": model, "messages": make_messages(i, prompt_words), "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    stamps: list[float] = []
    tokens = 0
    async with client.stream("POST", url, json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = orjson.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"].get("message"))
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for c in chunk.get("choices") or ():
                if c.get("delta", {}).get("content"):
                    stamps.append(time.perf_counter())
    end = time.perf_counter()
    return Sample(stamps[0] - t0 if stamps else end - t0, [b - a for a, b in zip(stamps, stamps[1:])], tokens,
                  end - t0)


async def run_http_async(base: str, model: str, n: int, concurrency: int, max_tokens: int,
                         prompt_words: int) -> tuple[list, float, int]:
    import httpx

    todo = iter(range(n))
    samples: list[Sample] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as client:
        async def worker() -> None:
            for i in todo:
                try:
                    samples.append(await _http_one(client, "/v1/chat/completions", model, i, max_tokens,
                                                   prompt_words))
                except Exception as e:  # counted and reported, the run goes on
                    errors.append(f"{type(e).__name__}: {e}")

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        duration = time.perf_counter() - t0
    if errors:
        click.echo(f"http errors ({len(errors)}), first: {errors[0]}", err=True)
    return samples, duration, len(errors)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, parallel: int, n_ctx: int, n_gpu_layers: int) -> subprocess.Popen:
    import httpx

    cmd = [sys.executable, "-m", "cli.serve", "--model", model, "--port", str(port), "--parallel", str(parallel),
           "--n-ctx", str(n_ctx), "--n-gpu-layers", str(n_gpu_layers), "--log-level", "warning"]
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(cmd, cwd=root, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise click.ClickException(f"llamaq serve exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.terminate()
    raise click.ClickException("llamaq serve did not become healthy in 300 s")


# --------------------------------------------------------------- the command


COLUMNS = [("mode", "mode", ""), ("request_throughput", "req/s", ".2f"), ("output_tok_s", "out tok/s", ".1f"),
           ("ttft_p50_ms", "TTFT p50 ms", ".1f"), ("ttft_p99_ms", "TTFT p99 ms", ".1f"),
           ("itl_p50_ms", "ITL p50 ms", ".1f"), ("itl_p99_ms", "ITL p99 ms", ".1f"),
           ("completion_tokens", "tokens", "d"), ("errors", "errors", "d")]


@click.command("serve")
@click.option("--model", default=None, help="GGUF path (default: the bundled model).")
@click.option("--concurrency", "-c", default=16, show_default=True, type=int, help="Concurrent streaming clients.")
@click.option("--requests", "-n", "n_requests", default=64, show_default=True, type=int)
@click.option("--max-tokens", default=32, show_default=True, type=int)
@click.option("--prompt-words", default=48, show_default=True, type=int, help="Filler words per prompt.")
@click.option("--parallel", default=16, show_default=True, type=int, help="Engine sequences (both modes).")
@click.option("--n-ctx", default=8192, show_default=True, type=int)
@click.option("--n-gpu-layers", default=0, show_default=True, type=int)
@click.option("--rounds", default=2, show_default=True, type=int,
              help="Alternate the two modes this many times (requests split between rounds).")
@click.option("--warmup", default=4, show_default=True, type=int, help="Requests run first in each mode, unmeasured.")
@out_option("serve")
def command(model, concurrency, n_requests, max_tokens, prompt_words, parallel, n_ctx, n_gpu_layers, rounds,
            warmup, out):
    """HTTP streaming serving throughput and latency vs the in-process engine."""
    from engine import Engine, EngineConfig

    cfg = EngineConfig(model_path=model, n_parallel=parallel, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers)
    model_path = str(cfg.resolved_model_path())
    click.echo(f"model {model_path}; {n_requests} requests, {concurrency} concurrent, {max_tokens} tokens out",
               err=True)

    # Both run side by side, alternating in rounds, so that a change in the
    # machine's load during the run affects both modes alike.
    engine = Engine(cfg)
    port = free_port()
    proc = None
    modes = {"in-process": ([], 0.0, 0), "http": ([], 0.0, 0)}
    try:
        model_name = engine.model_name
        proc = start_server(model_path, port, parallel, n_ctx, n_gpu_layers)
        url = f"http://127.0.0.1:{port}"
        run_inprocess(engine, warmup, min(warmup, concurrency), max_tokens, prompt_words)
        asyncio.run(run_http_async(url, model_name, warmup, min(warmup, concurrency), max_tokens, prompt_words))
        per_round = max(concurrency, n_requests // rounds)
        for r in range(rounds):
            click.echo(f"round {r + 1}/{rounds}: {per_round} requests per mode", err=True)
            for mode in modes:
                if mode == "http":
                    got = asyncio.run(run_http_async(url, model_name, per_round, concurrency, max_tokens,
                                                     prompt_words))
                else:
                    got = run_inprocess(engine, per_round, concurrency, max_tokens, prompt_words)
                samples, duration, errors = modes[mode]
                modes[mode] = (samples + got[0], duration + got[1], errors + got[2])
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        engine.close()
    base = summarize("in-process", *modes["in-process"][:2], concurrency, modes["in-process"][2])
    http = summarize("http", *modes["http"][:2], concurrency, modes["http"][2])

    ratios = {"request_throughput": http.request_throughput / base.request_throughput,
              "output_tok_s": http.output_tok_s / base.output_tok_s,
              "ttft_p50": http.ttft_p50_ms / base.ttft_p50_ms}
    print_table([asdict(base), asdict(http)], COLUMNS)
    click.echo("ratio http/in-process: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    write_json(out, "serve", {
        "model": model_path, "concurrency": concurrency, "requests": n_requests, "rounds": rounds, "max_tokens": max_tokens,
        "prompt_words": prompt_words, "parallel": parallel, "n_gpu_layers": n_gpu_layers, "cpu_count": os.cpu_count(),
        "results": [asdict(base), asdict(http)], "ratios": ratios,
        "target": {"output_tok_s_ratio_min": 0.9, "met": ratios["output_tok_s"] >= 0.9}})
