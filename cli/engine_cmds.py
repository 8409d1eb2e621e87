"""`llamaq complete | chat | embed`: try the engine from a shell (in-process, no services)."""

from __future__ import annotations

import sys

import click
import orjson

from engine import Engine, EngineConfig, EngineError, Request, SamplingParams
from jobs.chat import chat_for


def _engine(model: str | None, **kw) -> Engine:
    try:
        return Engine(EngineConfig(model_path=model, **kw))
    except EngineError as e:
        raise click.ClickException(str(e)) from e


def _sampling_options(f):
    for opt in reversed(
        [
            click.option("--model", "-m", envvar="LLAMAQ_MODEL", help="GGUF file (default: bundled Gemma 3 270M)."),
            click.option("--max-tokens", "-n", default=128, show_default=True),
            click.option("--temperature", "-t", default=0.8, show_default=True),
            click.option("--seed", type=int, default=None),
            click.option("--stop", multiple=True, help="Stop string (repeatable)."),
            click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON."),
        ]
    ):
        f = opt(f)
    return f


def _run(eng: Engine, prompt: str, params: SamplingParams, as_json: bool) -> None:
    try:
        handle = eng.submit(Request(prompt, params))
        for delta in handle:
            if not as_json:
                click.echo(delta, nl=False)
        r = handle.result()
    except EngineError as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(r, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        click.echo()
        click.echo(
            f"[{r.finish_reason}; {r.usage.prompt_tokens} prompt + {r.usage.completion_tokens} generated tokens;"
            f" first token {r.timings.ttft_ms:.0f} ms, total {r.timings.total_ms:.0f} ms]",
            err=True,
        )


@click.command()
@click.argument("prompt")
@_sampling_options
def complete(prompt, model, max_tokens, temperature, seed, stop, as_json):
    """Continue PROMPT."""
    with _engine(model, n_parallel=1) as eng:
        _run(eng, prompt, SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=seed, stop=list(stop)), as_json)


@click.command()
@click.argument("message")
@click.option("--system", "-s", default=None, help="System prompt.")
@_sampling_options
def chat(message, system, model, max_tokens, temperature, seed, stop, as_json):
    """Send MESSAGE as one user turn (the model's chat template, or a plain fallback)."""
    with _engine(model, n_parallel=1) as eng:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": message}]
        chat_format = chat_for(eng)
        prompt = chat_format.render(messages)
        stops = list(stop) + chat_format.stop
        _run(eng, prompt, SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=seed, stop=stops), as_json)


@click.command()
@click.argument("texts", nargs=-1, required=True)
@click.option("--model", "-m", envvar="LLAMAQ_MODEL", help="GGUF file (default: bundled Gemma 3 270M).")
def embed(texts, model):
    """Print one JSON embedding vector per TEXT (mean pooled, L2-normalised)."""
    with _engine(model, n_parallel=1) as eng:
        try:
            vectors = eng.embed(list(texts))
        except EngineError as e:
            raise click.ClickException(str(e)) from e
    for v in vectors:
        sys.stdout.buffer.write(orjson.dumps(v) + b"\n")


commands = [complete, chat, embed]
