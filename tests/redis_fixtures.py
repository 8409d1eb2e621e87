"""A real redis-server for the tests (Debian's), and real llamaq worker processes.

    redis_server   session fixture: RedisServer on a free port, AOF on, in a tmp dir
    redis_url      per-test: the server's URL, flushed first (the server is restarted if it died)
    start_worker(redis_url, model_path, ...) -> WorkerProcess   a `llamaq worker` subprocess
    wait_http_ready(proc, url, statuses, ...)   until a server process answers /health

RedisServer.restart() stops (SIGTERM: AOF flushed) and starts it again on the same
port and data dir; restart(kill=True) uses SIGKILL."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http_ready(proc: subprocess.Popen, url: str, statuses: tuple[int, ...] = (200,),
                    timeout: float = 120, log: Path | None = None) -> None:
    """Until GET url/health answers one of statuses; fails if the process exits first."""
    deadline = time.monotonic() + timeout
    while True:
        tail = log.read_text(errors="replace")[-3000:] if log else ""
        assert proc.poll() is None, f"{proc.args[:4]} exited: {tail}"
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code in statuses:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} did not come up: {tail}"
        time.sleep(0.1)


@dataclass
class RedisServer:
    dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server; tests/run.sh does it)")
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
                "--protected-mode", "no", "--daemonize", "no", "--logfile", str(self.dir / "redis.log")]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 20.0) -> None:
        import redis

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: see {self.dir / 'redis.log'}")
            try:
                if redis.Redis(port=self.port, socket_timeout=1).ping():
                    # AOF rewrite/load done: the server accepts writes
                    return
            except redis.exceptions.RedisError:
                pass
            time.sleep(0.05)
        raise RuntimeError("redis-server did not become ready")

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        self.proc.wait(timeout=30)
        self.proc = None

    def restart(self, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server) -> str:
    import redis

    if not redis_server.alive:
        redis_server.start()
    redis.Redis.from_url(redis_server.url).flushall()
    return redis_server.url


# ---------------------------------------------------------------- worker processes


@dataclass
class WorkerProcess:
    proc: subprocess.Popen
    log: Path
    redis_url: str
    prefix: str = "llamaq"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def name(self) -> str | None:
        """The name it registered under (host:pid:...), once registered."""
        import redis

        r = redis.Redis.from_url(self.redis_url, decode_responses=True)
        for n in r.smembers(f"{self.prefix}:workers"):
            if f":{self.pid}:" in n and r.exists(f"{self.prefix}:worker:{n}"):
                return n
        return None

    def wait_ready(self, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited ({self.proc.returncode}):\n{self.tail()}")
            n = self.name()
            if n:
                return n
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready after {timeout}s:\n{self.tail()}")

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def kill(self) -> None:
        """kill -9: no warm shutdown, nothing acknowledged or cleaned up."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()


def start_worker(redis_url: str, model_path: str | os.PathLike, *, parallel: int = 4,
                 log_dir: Path, env: dict | None = None, via_celery: bool = False,
                 extra_args: list[str] = ()) -> WorkerProcess:
    """Start a worker subprocess: `python -m cli.worker` (what `llamaq worker`
    runs) or, with via_celery, a plain `celery -A jobs.celery_app worker` with
    LLAMAQ_* variables. env adds LLAMAQ_* settings (e.g. LLAMAQ_VISIBILITY_TIMEOUT)."""
    e = dict(os.environ, **(env or {}))
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    if via_celery:
        e.update(LLAMAQ_MODEL=str(model_path), LLAMAQ_REDIS_URL=redis_url, LLAMAQ_PARALLEL=str(parallel))
        args = [sys.executable, "-m", "celery", "-A", "jobs.celery_app", "worker", "--loglevel", "INFO",
                "-n", f"test-{time.monotonic_ns()}@%h", *extra_args]
    else:
        args = [sys.executable, "-m", "cli.worker", "--model", str(model_path), "--parallel", str(parallel),
                "--redis", redis_url, *extra_args]
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"worker-{time.monotonic_ns()}.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(args, cwd=ROOT, env=e, stdout=f, stderr=subprocess.STDOUT)
    return WorkerProcess(proc, log, redis_url)
