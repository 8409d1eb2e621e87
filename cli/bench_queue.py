"""`llamaq bench queue`: the same short jobs through Redis + Celery + one
`llamaq worker` process, and on the in-process engine, in one run; plus how
fast jobs are enqueued (bulk submit_many, and one submit() at a time).

Greedy completions with distinct prompts; end-of-generation tokens are biased
away (logit_bias) so every job generates exactly --max-tokens tokens on both
paths. The throughput ratio is queue jobs/s over in-process jobs/s."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from cli.benchutil import out_option, print_table, write_json

WORDS = ("river mountain city lantern quiet engine paper garden window silver market winter harbor "
         "candle forest letter bridge meadow thunder violin").split()
ROOT = Path(__file__).resolve().parent.parent


def job_bodies(n: int, max_tokens: int, bias: dict) -> list[tuple[str, dict]]:
    out = []
    for i in range(n):
        words = " ".join(WORDS[(i * 7 + j * (i + 3)) % len(WORDS)] for j in range(12))
        out.append(("completion", {"prompt": f"Note {i}: {words}", "max_tokens": max_tokens, "temperature": 0,
                                   "logit_bias": bias}))
    return out


def run_in_process(model: str | None, parallel: int, items: list) -> dict:
    from engine import Engine, EngineConfig
    from jobs import kinds

    eng = Engine(EngineConfig(model_path=model, n_parallel=parallel))
    try:
        kinds.run(eng, *items[0])  # warm-up
        t0 = time.perf_counter()
        pendings = [kinds.start(eng, k, kinds.validate(k, b)) for k, b in items]
        bodies = [p.result() for p in pendings]
        wall = time.perf_counter() - t0
        st = eng.stats()
        return {"path": "in-process engine", "jobs": len(bodies), "wall_s": wall,
                "tokens": sum(b["usage"]["completion_tokens"] for b in bodies),
                "mean_batch": st.batch_tokens / max(1, st.steps)}
    finally:
        eng.close()


def start_redis(tmp: Path) -> tuple[subprocess.Popen, str]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise click.ClickException("redis-server not found: install it or pass --redis URL")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp), "--appendonly",
                             "yes", "--save", "", "--logfile", str(tmp / "redis.log")])
    import redis

    for _ in range(200):
        try:
            if redis.Redis(port=port).ping():
                return proc, f"redis://127.0.0.1:{port}/0"
        except redis.RedisError:
            time.sleep(0.05)
    raise click.ClickException("redis-server did not start")


def start_worker(model: str | None, parallel: int, url: str, name: str, log: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "cli.worker", "--parallel", str(parallel), "--redis", url, "--model-name", name,
            "--loglevel", "WARNING"]
    if model:
        args += ["--model", str(model)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(log, "wb") as f:
        return subprocess.Popen(args, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)


def run_queue(url: str, model: str | None, parallel: int, items: list, log: Path) -> dict:
    from jobs.remote import RedisBackend

    name = f"benchq-{os.urandom(3).hex()}"
    proc = start_worker(model, parallel, url, name, log)
    backend = RedisBackend(url, default_model=name)
    try:
        deadline = time.monotonic() + 300
        while name not in backend.models():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise click.ClickException(f"worker did not start; see {log}")
            time.sleep(0.2)
        backend.wait(backend.submit(*items[0]).id, timeout=120)  # warm-up
        t0 = time.perf_counter()
        ids = backend.submit_many(items)
        t_submit = time.perf_counter() - t0
        recs = [backend.wait(j) for j in ids]
        wall = time.perf_counter() - t0
        bad = [r for r in recs if r.status != "succeeded"]
        if bad:
            raise click.ClickException(f"{len(bad)} jobs did not succeed, e.g. {bad[0].error}")
        engines = backend.metrics()["engines"]
        mean_batch = engines[0]["batch_tokens"] / max(1, engines[0]["steps"]) if engines else None
        return {"path": "Redis + Celery + 1 worker", "jobs": len(recs), "wall_s": wall, "submit_s": t_submit,
                "tokens": sum(r.result["usage"]["completion_tokens"] for r in recs), "mean_batch": mean_batch}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        backend.close()


def run_enqueue(url: str, n_bulk: int, n_single: int) -> list[dict]:
    """Jobs for a model no worker serves: they only queue. Removed afterwards."""
    import redis

    from jobs.remote import RedisBackend
    from jobs.settings import queue_name

    model = f"bench-enqueue-{os.urandom(3).hex()}"
    backend = RedisBackend(url, default_model=model)
    body = {"messages": [{"role": "user", "content": "Translate 'good morning' into French."}], "max_tokens": 16}
    items = [("chat", body)] * n_bulk
    t0 = time.perf_counter()
    ids = backend.submit_many(items, batch_id=f"{model}-batch")
    bulk = time.perf_counter() - t0
    t0 = time.perf_counter()
    ids += [backend.submit("chat", body).id for _ in range(n_single)]
    single = time.perf_counter() - t0
    r = redis.Redis.from_url(url)
    for i in range(0, len(ids), 1000):
        r.delete(*[backend.store.job_key(j) for j in ids[i : i + 1000]])
    r.delete(queue_name(model, "batch"), queue_name(model, "interactive"), backend.store.model_key(model),
             backend.store.batch_key(f"{model}-batch"), backend.store.batch_key(f"{model}-batch") + ":jobs")
    backend.close()
    return [{"path": "enqueue: submit_many (bulk)", "jobs": n_bulk, "wall_s": bulk, "jobs_s": n_bulk / bulk},
            {"path": "enqueue: submit() one at a time", "jobs": n_single, "wall_s": single,
             "jobs_s": n_single / single}]


@click.command("queue")
@click.option("--model", default=None, help="GGUF model (default: the bundled model).")
@click.option("--jobs", "n_jobs", default=256, show_default=True)
@click.option("--max-tokens", default=16, show_default=True)
@click.option("--parallel", default=16, show_default=True, help="Engine sequences, both paths.")
@click.option("--redis", "redis_url", default=None, help="Use this Redis (default: start a private redis-server).")
@click.option("--enqueue-jobs", default=20000, show_default=True, help="Jobs in the bulk enqueue measurement.")
@click.option("--single-jobs", default=1000, show_default=True, help="Jobs submitted one at a time.")
@out_option("queue")
def command(model, n_jobs, max_tokens, parallel, redis_url, enqueue_jobs, single_jobs, out):
    """Queue path vs in-process engine on the same jobs; enqueue rate."""
    items = job_bodies(n_jobs, max_tokens, _eog_bias(model))
    click.echo(f"in-process: {n_jobs} jobs x {max_tokens} tokens, parallel {parallel} ...")
    local = run_in_process(model, parallel, items)
    tmp = Path(tempfile.mkdtemp(prefix="llamaq-bench-queue-"))
    redis_proc = None
    if redis_url is None:
        redis_proc, redis_url = start_redis(tmp)
    try:
        click.echo(f"queue: the same jobs through {redis_url} and one worker ...")
        queue = run_queue(redis_url, model, parallel, items, tmp / "worker.log")
        click.echo("enqueue rate ...")
        enq = run_enqueue(redis_url, enqueue_jobs, single_jobs)
    finally:
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(timeout=30)
    for r in (local, queue):
        r["jobs_s"] = r["jobs"] / r["wall_s"]
        r["tok_s"] = r["tokens"] / r["wall_s"]
    queue["ratio"] = queue["jobs_s"] / local["jobs_s"]
    local["ratio"] = 1.0
    rows = [local, queue, *enq]
    print_table(rows, [("path", "path", ""), ("jobs", "jobs", "d"), ("wall_s", "wall s", ".2f"),
                       ("jobs_s", "jobs/s", ".1f"), ("tok_s", "tok/s", ".1f"), ("mean_batch", "mean batch", ".1f"),
                       ("ratio", "vs in-process", ".2f")])
    targets = {"queue_vs_in_process >= 0.9": queue["ratio"] >= 0.9,
               "bulk_enqueue_jobs_s >= 2000": enq[0]["jobs_s"] >= 2000}
    for k, ok in targets.items():
        click.echo(f"target {k}: {'met' if ok else 'MISSED'}")
    write_json(out, "queue", {"model": model or "default", "jobs": n_jobs, "max_tokens": max_tokens,
                              "parallel": parallel, "cpu_count": os.cpu_count(), "rows": rows,
                              "ratios": {"queue_vs_in_process": queue["ratio"]},
                              "enqueue_jobs_s": {"bulk": enq[0]["jobs_s"], "single": enq[1]["jobs_s"]},
                              "targets": targets})


def _eog_bias(model: str | None) -> dict:
    """-100 on the model's end-of-generation tokens (read without a context)."""
    from engine.config import default_model_path
    from engine.model import Model

    m = Model(Path(model) if model else default_model_path(), n_gpu_layers=0, verbose=False)
    try:
        return {str(t): -100 for t in m.eog_tokens}
    finally:
        m.close()
