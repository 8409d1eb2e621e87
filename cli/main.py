"""The `llamaq` command."""

from __future__ import annotations

import os

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llamaq")
@click.option("--verbose", "-v", is_flag=True, help="Show llama.cpp's own log lines (model loading, context setup).")
def main(verbose: bool) -> None:
    """llamaq: batch LLM jobs on GGUF models, on one machine or a fleet."""
    if verbose:
        os.environ["LLAMAQ_VERBOSE"] = "1"  # read by EngineConfig, here and in worker processes


@main.group()
def bench() -> None:
    """Benchmarks: each prints a table and writes JSON, baseline measured in the same run."""


# The commands live in their own modules; this file only wires them up.
from cli import (  # noqa: E402
    client_cmds,
    engine_cmds,
    serve,
    translate,
    worker,
)

for _cmd in (*engine_cmds.commands, translate.command, serve.command, worker.command, *client_cmds.commands):
    main.add_command(_cmd)
from cli.bench import engine as bench_engine, fidelity as bench_fidelity, json as bench_json  # noqa: E402
from cli.bench import batchmem as bench_batchmem, prefix as bench_prefix, priority as bench_priority  # noqa: E402
from cli.bench import queue as bench_queue, serve as bench_serve, translate as bench_translate  # noqa: E402

for _cmd in (bench_engine, bench_fidelity, bench_prefix, bench_json, bench_queue, bench_priority, bench_batchmem,
             bench_serve, bench_translate):
    bench.add_command(_cmd.command)
