"""`llamaq bench batchmem`: the API process's memory while many large batches
are open. A private redis-server and a `llamaq serve --redis` process; no
worker serves the batches' model, so every batch stays in_progress. The
resident memory of the API process is read (/proc) after start-up (the
baseline), after the first batch is open, and after all of them; the ratio
to the first-batch figure should stay near 1: batches hold no lines in memory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import orjson

from cli.bench.queue import ROOT, start_redis
from cli.bench.util import out_option, print_table, write_json


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _batch_file(n: int, tag: str) -> bytes:
    return b"".join(orjson.dumps({"custom_id": f"{tag}-{i}", "method": "POST", "url": "/v1/chat/completions",
                                  "body": {"model": "batchmem-nobody", "max_tokens": 16, "messages": [
                                      {"role": "user", "content": f"Write a line about item {i} of {tag}."}]}})
                    + b"\n" for i in range(n))


@click.command("batchmem")
@click.option("--batches", default=20, show_default=True)
@click.option("--lines", default=10_000, show_default=True, help="Lines per batch.")
@out_option("batchmem")
def command(batches, lines, out):
    """API memory with many large batches open (the target: within 10% of one batch's)."""
    import httpx

    tmp = Path(tempfile.mkdtemp(prefix="llamaq-bench-batchmem-"))
    redis_proc, url = start_redis(tmp)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    api = subprocess.Popen([sys.executable, "-m", "cli.serve", "--redis", url, "--port", str(port),
                            "--log-level", "warning"], env=env, cwd=ROOT,
                           stdout=open(tmp / "api.log", "wb"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    rows = []
    try:
        for _ in range(600):
            try:
                httpx.get(f"{base}/health", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        rows.append({"point": "started", "open_batches": 0, "rss_mb": _rss_mb(api.pid)})
        ids = []
        for b in range(batches):
            f = httpx.post(f"{base}/v1/files", files={"file": ("in.jsonl", _batch_file(lines, f"b{b}"))},
                           data={"purpose": "batch"}, timeout=120).json()
            ids.append(httpx.post(f"{base}/v1/batches", json={"input_file_id": f["id"], "completion_window": "24h",
                                                               "endpoint": "/v1/chat/completions"},
                                  timeout=60).json()["id"])
            while httpx.get(f"{base}/v1/batches/{ids[-1]}", timeout=60).json()["status"] == "validating":
                time.sleep(0.2)
            click.echo(f"batch {b + 1}/{batches} open ({lines} lines)")
            if b == 0 or b == batches - 1:
                rows.append({"point": f"{b + 1} batches open", "open_batches": b + 1, "rss_mb": _rss_mb(api.pid)})
        time.sleep(5)  # a few sweeps over all of them
        rows.append({"point": "after 5 s of sweeps", "open_batches": batches, "rss_mb": _rss_mb(api.pid)})
    finally:
        api.terminate()
        api.wait(timeout=30)
        redis_proc.terminate()
        redis_proc.wait(timeout=30)
    one = rows[1]["rss_mb"]
    for r in rows:
        r["vs_one_batch"] = r["rss_mb"] / one
    print_table(rows, [("point", "point", ""), ("open_batches", "open", "d"), ("rss_mb", "API RSS MB", ".1f"),
                       ("vs_one_batch", "vs 1 batch", ".2f")])
    ok = max(r["vs_one_batch"] for r in rows[1:]) <= 1.10
    click.echo(f"target API memory within 10% of one batch's with {batches} x {lines} open: {'met' if ok else 'MISSED'}")
    write_json(out, "batchmem", {"batches": batches, "lines": lines, "rows": rows, "target_met": ok})
