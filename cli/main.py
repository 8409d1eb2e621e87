"""The `llamaq` command."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llamaq")
def main() -> None:
    """llamaq: batch LLM jobs on GGUF models, on one machine or a fleet."""


@main.group()
def bench() -> None:
    """Benchmarks: each prints a table and writes JSON, baseline measured in the same run."""


# COMMANDS: one line per command module.
from cli import engine_cmds  # noqa: E402

for _cmd in engine_cmds.commands:
    main.add_command(_cmd)

from cli import bench_engine, bench_prefix  # noqa: E402

bench.add_command(bench_engine.command)
bench.add_command(bench_prefix.command)

from cli import bench_translate, translate  # noqa: E402
main.add_command(translate.command); bench.add_command(bench_translate.command)  # noqa: E702

from cli import bench_serve, client_cmds, serve  # noqa: E402
for _cmd in (serve.command, *client_cmds.commands): main.add_command(_cmd)  # noqa: E701
bench.add_command(bench_serve.command)

from cli import bench_queue, worker  # noqa: E402
main.add_command(worker.command); bench.add_command(bench_queue.command)  # noqa: E702

from cli import bench_json; bench.add_command(bench_json.command)  # noqa: E402,E702
