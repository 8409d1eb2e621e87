"""Shared helpers for the API tests (no tests here): a live uvicorn server in
a thread, the official openai client pointed at it, batch polling."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import openai
import orjson
import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(app):
    """Serve app on a free loopback port; yields the base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def client(base_url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key=key, max_retries=0, timeout=120)


def jsonl(lines: list) -> bytes:
    return b"".join((line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n" for line in lines)


def chat_line(custom_id: str, model: str, text: str, max_tokens: int = 4, **extra) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens,
                     "temperature": 0, **extra}}


def wait_batch(c: openai.OpenAI, batch_id: str, timeout: float = 120, until=("completed", "failed", "cancelled",
                                                                              "expired")):
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        b = c.batches.retrieve(batch_id)
        if not seen or seen[-1] != b.status:
            seen.append(b.status)
        if b.status in until:
            return b, seen
        if time.monotonic() > deadline:
            raise TimeoutError(f"batch {batch_id} still {b.status} after {timeout}s")
        time.sleep(0.05)


def read_lines(c: openai.OpenAI, file_id: str) -> list[dict]:
    return [orjson.loads(line) for line in c.files.content(file_id).content.splitlines() if line.strip()]
