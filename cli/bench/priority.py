"""`llamaq bench priority`: how long an interactive request waits to start
while a large batch runs on the same worker.

One `llamaq worker` (private redis-server unless --redis). The time to the
first streamed token of a short interactive chat is measured with the worker
idle (the baseline) and then while a --batch-lines batch keeps every engine
sequence busy and a backlog of batch jobs waits in the worker. Batch jobs go
to the engine with priority 1 and interactive ones with 0, so the interactive
one should start at the next free sequence: about one engine step plus its own
prefill, not behind the backlog. --fifo gives batch jobs priority 0 too (the
old FIFO engine queue), for comparison."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import click

from cli.bench.queue import job_bodies, start_redis, start_worker
from cli.bench.util import out_option, pct, print_table, write_json


def _ttft(backend, i: int) -> float:
    body = {"messages": [{"role": "user", "content": f"Say hello to visitor {i}."}], "max_tokens": 4,
            "temperature": 0}
    t0 = time.perf_counter()
    rec = backend.submit("chat", body, priority="interactive", stream=True)
    first = None
    for ev in backend.events(rec.id):
        if first is None and "delta" in ev:
            first = time.perf_counter() - t0
        if "record" in ev and ev["record"].status != "succeeded":
            raise click.ClickException(f"interactive job {rec.id} ended {ev['record'].status}")
    return first if first is not None else time.perf_counter() - t0


def _measure(backend, n: int, gap_s: float) -> list[float]:
    out = []
    for i in range(n):
        out.append(_ttft(backend, i))
        time.sleep(gap_s)
    return out


@click.command("priority")
@click.option("--model", default=None, help="GGUF model (default: the bundled model).")
@click.option("--parallel", default=16, show_default=True, help="Engine sequences.")
@click.option("--batch-lines", default=5000, show_default=True, help="Jobs in the batch running meanwhile.")
@click.option("--batch-tokens", default=64, show_default=True, help="max_tokens of each batch job.")
@click.option("--requests", "n_req", default=20, show_default=True, help="Interactive requests per phase.")
@click.option("--gap", default=0.2, show_default=True, help="Seconds between interactive requests.")
@click.option("--fifo", is_flag=True, help="Batch jobs at the engine's interactive priority (FIFO, for comparison).")
@click.option("--redis", "redis_url", default=None, help="Use this Redis (default: start a private redis-server).")
@out_option("priority")
def command(model, parallel, batch_lines, batch_tokens, n_req, gap, fifo, redis_url, out):
    """Interactive start latency (p50/p95) with the worker idle and under a large batch."""
    from jobs.remote import RedisBackend

    tmp = Path(tempfile.mkdtemp(prefix="llamaq-bench-priority-"))
    redis_proc = None
    if redis_url is None:
        redis_proc, redis_url = start_redis(tmp)
    name = f"benchp-{os.urandom(3).hex()}"
    if fifo:
        os.environ["LLAMAQ_BATCH_ENGINE_PRIORITY"] = "0"
    proc = start_worker(model, parallel, redis_url, name, tmp / "worker.log")
    backend = RedisBackend(redis_url, default_model=name)
    try:
        deadline = time.monotonic() + 300
        while name not in backend.models():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise click.ClickException(f"worker did not start; see {tmp / 'worker.log'}")
            time.sleep(0.2)
        _measure(backend, 2, 0)  # warm-up
        click.echo(f"idle worker: {n_req} interactive requests ...")
        idle = _measure(backend, n_req, gap)
        click.echo(f"submitting a {batch_lines}-line batch ...")
        ids = backend.submit_many(job_bodies(batch_lines, batch_tokens, {}), batch_id=f"{name}-batch")
        while backend.store.model_counts(name).get("running", 0) < parallel:
            time.sleep(0.1)
        held = backend.store.model_counts(name).get("running", 0)
        click.echo(f"batch running ({held} jobs held by the worker): {n_req} interactive requests ...")
        loaded = _measure(backend, n_req, gap)
        done = backend.batch_counts(f"{name}-batch")
        backend.cancel_batch(f"{name}-batch")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except Exception:
            proc.kill()
        backend.close()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(timeout=30)
    rows = [{"phase": "idle worker (baseline)", "n": len(idle), "p50_s": pct(idle, 50), "p95_s": pct(idle, 95),
             "max_s": max(idle)},
            {"phase": f"during {batch_lines}-line batch{' (FIFO)' if fifo else ''}", "n": len(loaded),
             "p50_s": pct(loaded, 50), "p95_s": pct(loaded, 95), "max_s": max(loaded)}]
    for r in rows:
        r["p50_vs_idle"] = r["p50_s"] / rows[0]["p50_s"]
    print_table(rows, [("phase", "phase", ""), ("n", "requests", "d"), ("p50_s", "p50 s", ".3f"),
                       ("p95_s", "p95 s", ".3f"), ("max_s", "max s", ".3f"), ("p50_vs_idle", "p50 vs idle", ".2f")])
    click.echo(f"batch jobs finished while measuring: {done.get('succeeded', 0)} of {len(ids)} "
               f"(worker held {held})")
    write_json(out, "priority", {"model": model or "default", "parallel": parallel, "batch_lines": batch_lines,
                                 "batch_tokens": batch_tokens, "fifo": fifo, "cpu_count": os.cpu_count(),
                                 "rows": rows, "idle_s": idle, "loaded_s": loaded, "held": held})
