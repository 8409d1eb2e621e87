"""`llamaq serve`: the OpenAI-compatible API on uvicorn.

Without --redis the engine runs in this process (one machine, no services);
with --redis requests become jobs for `llamaq worker` processes, and files and
batches live in Redis too, so several API processes can share them.

Closed by default: without API keys the API binds a loopback address only;
binding another address without keys takes --insecure-no-auth."""

from __future__ import annotations

import ipaddress
import os

import click


def build_app(redis_url: str | None, model: str | None, api_keys: list[str], data_dir: str | None = None,
              parallel: int = 16, n_ctx: int | None = None, n_gpu_layers: int = 0):
    """The app and a close() for what it opened (the in-process engine)."""
    from api import ApiConfig, LocalStore, RedisStore, create_app

    config = ApiConfig(api_keys=api_keys)
    if redis_url:
        from jobs.remote import RedisBackend

        backend = RedisBackend(redis_url)
        return create_app(backend, store=RedisStore(redis_url), config=config), getattr(backend, "close", None)
    from engine import Engine, EngineConfig
    from jobs.local import LocalBackend

    cfg = EngineConfig(model_path=model, n_parallel=parallel, n_gpu_layers=n_gpu_layers)
    if n_ctx:
        cfg.n_ctx = n_ctx
    engine = Engine(cfg)
    backend = LocalBackend(engine)

    def close() -> None:
        getattr(backend, "close", lambda: None)()
        engine.close()

    return create_app(backend, store=LocalStore(data_dir), config=config), close


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_auth(host: str, keys: list[str], insecure_no_auth: bool) -> None:
    """Refuse to serve an open API beyond this machine unless told to, and say
    which of the two it is when there are no keys."""
    if keys:
        return
    if is_loopback(host):
        click.echo(f"llamaq serve: no API keys, so no authentication: listening on {host} only "
                   "(this machine). Set --api-key or LLAMAQ_API_KEYS to serve other hosts.", err=True)
    elif insecure_no_auth:
        click.echo(f"llamaq serve: WARNING: no API keys and --insecure-no-auth: anyone who can reach "
                   f"{host} can read, cancel and delete every job, file and batch.", err=True)
    else:
        raise click.UsageError(
            f"refusing to listen on {host} without API keys: anyone who could reach it could read, cancel "
            "and delete every job, file and batch. Set --api-key KEY (or LLAMAQ_API_KEYS=k1,k2), "
            "or pass --insecure-no-auth to serve it open anyway.")


@click.command("serve")
@click.option("--redis", "redis_url", envvar="LLAMAQ_REDIS_URL", default=None,
              help="Redis URL: serve through `llamaq worker` processes (default: an in-process engine).")
@click.option("--model", envvar="LLAMAQ_MODEL", default=None,
              help="GGUF model path for the in-process engine (default: the bundled model).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--api-key", "api_keys", multiple=True,
              help="Require this Bearer key (repeat for several; also LLAMAQ_API_KEYS, comma-separated).")
@click.option("--data-dir", default=None, help="Keep files and batches here (in-process mode; default: memory).")
@click.option("--parallel", default=16, show_default=True, type=int, help="In-process engine sequences.")
@click.option("--n-ctx", default=None, type=int, help="In-process engine KV cells.")
@click.option("--n-gpu-layers", default=0, show_default=True, type=int, help="-1: all layers on the GPU.")
@click.option("--insecure-no-auth", is_flag=True,
              help="Allow binding a non-loopback --host without API keys: anyone who reaches it "
                   "can read, cancel and delete every job, file and batch.")
@click.option("--log-level", default="info", show_default=True)
def command(redis_url, model, host, port, api_keys, data_dir, parallel, n_ctx, n_gpu_layers, insecure_no_auth,
            log_level):
    """Serve the OpenAI-compatible HTTP API."""
    import uvicorn

    keys = list(api_keys) + [k.strip() for k in os.environ.get("LLAMAQ_API_KEYS", "").split(",") if k.strip()]
    check_auth(host, keys, insecure_no_auth)
    if redis_url and model:
        click.echo("note: --model is ignored with --redis; workers choose their models", err=True)
    app, close = build_app(redis_url, model, keys, data_dir, parallel, n_ctx, n_gpu_layers)
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
    finally:
        if close:
            close()


if __name__ == "__main__":  # `python -m cli.serve` (the bench starts the server this way)
    command()
