"""Closed by default: real `llamaq serve` processes on the tiny model. Without
API keys the API listens on loopback only and says so; another address needs
keys or --insecure-no-auth."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from redis_fixtures import wait_http_ready
from test_api_support import free_port

ROOT = Path(__file__).resolve().parent.parent


def serve_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli", "serve", "--parallel", "2", "--n-ctx", "1024", "--log-level", "warning", *args]


def env(**extra: str) -> dict:
    e = {k: v for k, v in os.environ.items() if k != "LLAMAQ_API_KEYS"}
    return {**e, "PYTHONPATH": str(ROOT), **extra}


@contextmanager
def serving(args: list[str], log: Path, **extra_env: str):
    """A running server: yields (base URL on 127.0.0.1, its stderr so far as a callable)."""
    port = free_port()
    err = open(log, "w")
    proc = subprocess.Popen(serve_cmd(*args, "--port", str(port)), cwd=ROOT, env=env(**extra_env),
                            stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ready(proc, url, (200, 401), log=log)
        yield url, log.read_text
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        err.close()


def test_open_non_loopback_bind_is_refused(tiny_model_path):
    for host in ("0.0.0.0", "::", "example.org"):
        r = subprocess.run(serve_cmd("--model", str(tiny_model_path), "--host", host, "--port", str(free_port())),
                           cwd=ROOT, env=env(), capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, r.stderr
        assert f"refusing to listen on {host} without API keys" in r.stderr
        assert "--insecure-no-auth" in r.stderr and "LLAMAQ_API_KEYS" in r.stderr


def test_no_keys_serves_loopback_only_and_says_so(tiny_model_path, tmp_path):
    with serving(["--model", str(tiny_model_path)], tmp_path / "err") as (url, stderr):
        assert httpx.get(f"{url}/v1/models", timeout=10).status_code == 200  # open, on this machine
        assert "no API keys" in stderr() and "listening on 127.0.0.1 only" in stderr()


def test_keys_allow_any_address_and_are_required(tiny_model_path, tmp_path):
    with serving(["--model", str(tiny_model_path), "--host", "0.0.0.0"], tmp_path / "err",
                 LLAMAQ_API_KEYS="k1,k2") as (url, stderr):
        assert httpx.get(f"{url}/v1/models", timeout=10).status_code == 401
        ok = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer k2"}, timeout=10)
        assert ok.status_code == 200
        assert "no API keys" not in stderr()


def test_insecure_flag_allows_an_open_address_with_a_warning(tiny_model_path, tmp_path):
    with serving(["--model", str(tiny_model_path), "--host", "0.0.0.0", "--insecure-no-auth"],
                 tmp_path / "err") as (url, stderr):
        assert httpx.get(f"{url}/v1/models", timeout=10).status_code == 200
        assert "WARNING: no API keys and --insecure-no-auth" in stderr()


@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True),
                                           ("localhost", True), ("0.0.0.0", False), ("::", False),
                                           ("10.0.0.5", False), ("myhost", False)])
def test_is_loopback(host, loopback):
    from cli.serve import is_loopback

    assert is_loopback(host) is loopback
