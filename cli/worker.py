"""`llamaq worker`: a Celery worker that loads one model and decodes every job
it holds in one batch. The same as
    LLAMAQ_MODEL=PATH LLAMAQ_REDIS_URL=URL celery -A jobs.celery_app worker
with the options turned into LLAMAQ_* variables."""

from __future__ import annotations

import os
import socket

import click


@click.command("worker")
@click.option("--model", "model", type=click.Path(dir_okay=False), default=None,
              help="GGUF model to serve (default: $LLAMAQ_MODEL or the bundled model).")
@click.option("--model-name", default=None, help="Name to serve it under (default: the file stem).")
@click.option("--parallel", type=click.IntRange(1, 1024), default=None,
              help="Sequences decoded at once (default 16).")
@click.option("--threads", type=click.IntRange(1, 4096), default=None,
              help="Pool threads (default: parallel + parallel/4, at least parallel + 2).")
@click.option("--redis", "redis_url", default=None, envvar="LLAMAQ_REDIS_URL",
              help="Redis URL (broker and job store). Default redis://localhost:6379/0.")
@click.option("--queues", "-Q", default=None,
              help="Extra Celery queues to consume, comma-separated (the model's own are always consumed).")
@click.option("--n-gpu-layers", type=int, default=None, help="Layers to offload to the GPU (-1: all).")
@click.option("--n-ctx", type=int, default=None, help="KV cells shared by all sequences.")
@click.option("--visibility-timeout", type=int, default=None,
              help="Seconds before an unacknowledged message goes to another worker (default 3600).")
@click.option("--loglevel", default="INFO", show_default=True)
def command(model, model_name, parallel, threads, redis_url, queues, n_gpu_layers, n_ctx, visibility_timeout,
            loglevel):
    """Serve a model to the job queue in Redis."""
    env = {"LLAMAQ_MODEL": model, "LLAMAQ_MODEL_NAME": model_name, "LLAMAQ_PARALLEL": parallel,
           "LLAMAQ_THREADS": threads, "LLAMAQ_REDIS_URL": redis_url, "LLAMAQ_N_GPU_LAYERS": n_gpu_layers,
           "LLAMAQ_N_CTX": n_ctx, "LLAMAQ_VISIBILITY_TIMEOUT": visibility_timeout}
    for k, v in env.items():
        if v is not None:
            os.environ[k] = str(v)
    if model and not os.path.exists(model):
        raise click.BadParameter(f"no such file: {model}", param_hint="--model")

    from jobs.celery_app import app, settings  # reads LLAMAQ_* now

    argv = ["worker", f"--loglevel={loglevel}", "--pool=threads", f"--concurrency={settings.pool_threads}",
            f"--hostname=llamaq-{os.getpid()}@{socket.gethostname()}", "--without-gossip", "--without-mingle"]
    if queues:
        argv.append(f"--queues={queues}")
    app.worker_main(argv)


if __name__ == "__main__":
    command()
