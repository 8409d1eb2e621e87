"""`llamaq bench queue`: the same short jobs through Redis + Celery + one
`llamaq worker` process, and on the in-process engine, in one run; plus how
fast jobs are enqueued (bulk submit_many, and one submit() at a time).

Greedy completions with distinct prompts; end-of-generation tokens are biased
away (logit_bias) so every job generates exactly --max-tokens tokens on both
paths. Both engines stay loaded and the paths alternate in rounds (A B, B A,
...) with fresh prompts each round, so a busy machine weighs on both alike.
The throughput ratio is queue jobs/s over in-process jobs/s, summed over rounds."""

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

from cli.bench.util import out_option, print_table, write_json

WORDS = ("river mountain city lantern quiet engine paper garden window silver market winter harbor "
         "candle forest letter bridge meadow thunder violin").split()
ROOT = Path(__file__).resolve().parent.parent


def job_bodies(n: int, max_tokens: int, bias: dict, offset: int = 0) -> list[tuple[str, dict]]:
    out = []
    for i in range(offset, offset + n):
        words = " ".join(WORDS[(i * 7 + j * (i + 3)) % len(WORDS)] for j in range(12))
        out.append(("completion", {"prompt": f"Note {i}: {words}", "max_tokens": max_tokens, "temperature": 0,
                                   "logit_bias": bias}))
    return out


class InProcess:
    name = "in-process engine"

    def __init__(self, model: str | None, parallel: int):
        from engine import Engine, EngineConfig

        self.eng = Engine(EngineConfig(model_path=model, n_parallel=parallel))

    def run(self, items: list) -> dict:
        from jobs import kinds

        t0 = time.perf_counter()
        pendings = [kinds.start(self.eng, k, kinds.validate(k, b)) for k, b in items]
        bodies = [p.result() for p in pendings]
        return {"jobs": len(bodies), "wall_s": time.perf_counter() - t0,
                "tokens": sum(b["usage"]["completion_tokens"] for b in bodies)}

    def mean_batch(self) -> float:
        st = self.eng.stats()
        return st.batch_tokens / max(1, st.steps)

    def close(self) -> None:
        self.eng.close()


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


class Queue:
    name = "Redis + Celery + 1 worker"

    def __init__(self, url: str, model: str | None, parallel: int, log: Path):
        from jobs.remote import RedisBackend

        self.model_name = f"benchq-{os.urandom(3).hex()}"  # its own queue: no other worker takes these jobs
        self.proc = start_worker(model, parallel, url, self.model_name, log)
        self.backend = RedisBackend(url, default_model=self.model_name)
        deadline = time.monotonic() + 300
        while self.model_name not in self.backend.models():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise click.ClickException(f"worker did not start; see {log}")
            time.sleep(0.2)

    def run(self, items: list) -> dict:
        t0 = time.perf_counter()
        ids = self.backend.submit_many(items)
        t_submit = time.perf_counter() - t0
        recs = [self.backend.wait(j) for j in ids]
        wall = time.perf_counter() - t0
        bad = [r for r in recs if r.status != "succeeded"]
        if bad:
            raise click.ClickException(f"{len(bad)} jobs did not succeed, e.g. {bad[0].error}")
        return {"jobs": len(recs), "wall_s": wall, "submit_s": t_submit,
                "tokens": sum(r.result["usage"]["completion_tokens"] for r in recs)}

    def mean_batch(self) -> float | None:
        engines = self.backend.metrics()["engines"]
        return engines[0]["batch_tokens"] / max(1, engines[0]["steps"]) if engines else None

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.backend.close()


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
@click.option("--jobs", "n_jobs", default=256, show_default=True, help="Jobs per path per round.")
@click.option("--max-tokens", default=8, show_default=True)
@click.option("--parallel", default=16, show_default=True, help="Engine sequences, both paths.")
@click.option("--rounds", default=2, show_default=True, help="Rounds of both paths, order alternating.")
@click.option("--redis", "redis_url", default=None, help="Use this Redis (default: start a private redis-server).")
@click.option("--enqueue-jobs", default=20000, show_default=True, help="Jobs in the bulk enqueue measurement.")
@click.option("--single-jobs", default=1000, show_default=True, help="Jobs submitted one at a time.")
@out_option("queue")
def command(model, n_jobs, max_tokens, parallel, rounds, redis_url, enqueue_jobs, single_jobs, out):
    """Queue path vs in-process engine on the same jobs; enqueue rate."""
    bias = _eog_bias(model)
    tmp = Path(tempfile.mkdtemp(prefix="llamaq-bench-queue-"))
    redis_proc = None
    if redis_url is None:
        redis_proc, redis_url = start_redis(tmp)
    paths = []
    try:
        click.echo(f"loading the in-process engine and a worker on {redis_url} ...")
        paths = [InProcess(model, parallel), Queue(redis_url, model, parallel, tmp / "worker.log")]
        for p in paths:  # warm-up: first decode, first message
            p.run(job_bodies(4, max_tokens, bias, offset=10**6))
        runs: dict[str, list[dict]] = {p.name: [] for p in paths}
        for r in range(rounds):
            items = job_bodies(n_jobs, max_tokens, bias, offset=r * n_jobs)
            for p in (paths if r % 2 == 0 else paths[::-1]):
                click.echo(f"round {r + 1}: {p.name}: {n_jobs} jobs x {max_tokens} tokens ...")
                runs[p.name].append(p.run(items))
        rows = []
        for p in paths:
            rs = runs[p.name]
            wall = sum(x["wall_s"] for x in rs)
            row = {"path": p.name, "jobs": sum(x["jobs"] for x in rs), "tokens": sum(x["tokens"] for x in rs),
                   "wall_s": wall, "round_wall_s": [x["wall_s"] for x in rs], "mean_batch": p.mean_batch()}
            row["jobs_s"], row["tok_s"] = row["jobs"] / wall, row["tokens"] / wall
            rows.append(row)
        local, queue = rows
        queue["submit_s"] = [x["submit_s"] for x in runs[paths[1].name]]
        click.echo("enqueue rate ...")
        enq = run_enqueue(redis_url, enqueue_jobs, single_jobs)
    finally:
        for p in paths:
            p.close()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(timeout=30)
    local["ratio"], queue["ratio"] = 1.0, queue["jobs_s"] / local["jobs_s"]
    # each round's two runs are adjacent in time: their ratio is the least disturbed by other load
    per_round = sorted(a / b for a, b in zip(local["round_wall_s"], queue["round_wall_s"]))
    median_ratio = per_round[len(per_round) // 2] if len(per_round) % 2 else \
        (per_round[len(per_round) // 2 - 1] + per_round[len(per_round) // 2]) / 2
    rows += enq
    print_table(rows, [("path", "path", ""), ("jobs", "jobs", "d"), ("wall_s", "wall s", ".2f"),
                       ("jobs_s", "jobs/s", ".1f"), ("tok_s", "tok/s", ".1f"), ("mean_batch", "mean batch", ".1f"),
                       ("ratio", "vs in-process", ".2f")])
    click.echo(f"queue/in-process per round: {', '.join(f'{x:.2f}' for x in per_round)} (median {median_ratio:.2f})")
    targets = {"queue_vs_in_process >= 0.9": queue["ratio"] >= 0.9,
               "bulk_enqueue_jobs_s >= 2000": enq[0]["jobs_s"] >= 2000}
    for k, ok in targets.items():
        click.echo(f"target {k}: {'met' if ok else 'MISSED'}")
    write_json(out, "queue", {"model": model or "default", "jobs_per_round": n_jobs, "rounds": rounds,
                              "max_tokens": max_tokens, "parallel": parallel, "cpu_count": os.cpu_count(),
                              "rows": rows, "ratios": {"queue_vs_in_process": queue["ratio"],
                                                       "per_round": per_round, "median_per_round": median_ratio},
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
