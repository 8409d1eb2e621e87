"""Shared bits of the `llamaq bench` commands: percentiles, a table, a JSON file."""

from __future__ import annotations

import platform
import time
from pathlib import Path

import click
import orjson


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank; 0 for no values."""
    if not values:
        return 0.0
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """columns: (key, header, format spec such as '.1f')."""
    cells = [[h for _, h, _ in columns]]
    for r in rows:
        cells.append(["" if r.get(k) is None else format(r[k], f) for k, _, f in columns])
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for n, row in enumerate(cells):
        click.echo("  ".join(c.rjust(w) for c, w in zip(row, widths)))
        if n == 0:
            click.echo("  ".join("-" * w for w in widths))


def write_json(path: str | Path, name: str, data: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"bench": name, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": platform.node(), **data}
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    click.echo(f"wrote {path}")
    return path


def out_option(name: str):
    return click.option("--out", default=f"bench-results/{name}.json", show_default=True, help="JSON output file.")
