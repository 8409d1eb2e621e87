"""The distributed queue end to end: a real redis-server, real worker processes
(`python -m cli.worker` and a plain `celery -A jobs.celery_app worker`) on the
tiny model, jobs submitted through RedisBackend."""

from __future__ import annotations

import time

import pytest
import redis

from jobs.remote import RedisBackend
from redis_fixtures import RedisServer, start_worker



def chat(i: int, max_tokens: int = 16) -> tuple[str, dict]:
    return "chat", {"messages": [{"role": "user", "content": f"Tell me about river number {i}."}],
                    "max_tokens": max_tokens, "temperature": 0}


def wait_all(backend: RedisBackend, ids: list[str], timeout: float = 120) -> list:
    deadline = time.monotonic() + timeout
    recs = []
    for jid in ids:
        rec = backend.wait(jid, timeout=max(0.1, deadline - time.monotonic()))
        assert rec.done, f"job {jid} still {rec.status} after {timeout}s"
        recs.append(rec)
    return recs


def poll(cond, timeout: float = 60, every: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def url(redis_server):
    redis.Redis.from_url(redis_server.url).flushall()
    return redis_server.url


@pytest.fixture(scope="module")
def pair(url, tiny_model_path, tmp_path_factory):
    """Two workers on the tiny model: one via `llamaq worker`, one via plain celery."""
    logs = tmp_path_factory.mktemp("queue-workers")
    ws = [start_worker(url, tiny_model_path, parallel=8, log_dir=logs),
          start_worker(url, tiny_model_path, parallel=8, log_dir=logs, via_celery=True)]
    names = [w.wait_ready() for w in ws]
    yield names
    for w in ws:
        w.stop()


@pytest.fixture(scope="module")
def backend(url):
    b = RedisBackend(url)
    yield b
    b.close()


def test_two_workers_share_64_jobs_and_record_each_result_once(backend, pair):
    ids = backend.submit_many([chat(i, 4) for i in range(64)], batch_id="share")
    recs = wait_all(backend, ids)
    assert [r.status for r in recs] == ["succeeded"] * 64
    assert {r.worker for r in recs} == set(pair)  # both did work
    assert all(r.attempts == 1 for r in recs)
    for r in recs:
        assert r.result["object"] == "chat.completion"
        assert r.result["usage"]["completion_tokens"] == 4
    assert backend.batch_counts("share") == {"total": 64, "queued": 0, "running": 0, "succeeded": 64,
                                              "failed": 0, "cancelled": 0}


def test_a_job_that_raises_fails_with_its_error_and_its_neighbours_succeed(backend, pair):
    items = [chat(i, 4) for i in range(10)]
    items[3] = ("chat", {"messages": [{"role": "user", "content": "word " * 9000}], "max_tokens": 4})
    items[6] = ("chat", {"messages": [{"role": "user", "content": "hi"}], "grammar": "root ::= ("})
    items[8] = ("chat", {"messages": "not a list"})
    ids = backend.submit_many(items, batch_id="raises", jobs_per_message=10)  # all in one message
    recs = wait_all(backend, ids)
    assert [r.status for r in recs] == ["succeeded"] * 3 + ["failed"] + ["succeeded"] * 2 + ["failed"] + \
        ["succeeded", "failed", "succeeded"]
    assert recs[3].error["code"] == "context_length_exceeded" and "prompt" in recs[3].error["message"]
    assert recs[6].error["type"] == "invalid_request_error" and recs[6].error["message"]
    assert recs[8].error["param"] == "messages" and recs[8].attempts == 0  # rejected at submission
    assert recs[3].attempts == 1  # a bad request is not retried


def test_interactive_jobs_go_ahead_of_queued_batch_work(backend, pair):
    batch = backend.submit_many([chat(i, 6) for i in range(30)], batch_id="prio", jobs_per_message=1)
    urgent = backend.submit(*chat(1000, 4), priority="interactive")
    assert wait_all(backend, [urgent.id])[0].status == "succeeded"
    started = backend.get(urgent.id).started_at
    recs = wait_all(backend, batch)
    # the workers hold 20 batch jobs; the interactive one takes the first free slot, ahead of the 10 queued
    assert sum(r.started_at > started for r in recs) >= 8


def test_cancel_queued_and_running_jobs(backend, pair):
    # 2 workers x 10 pool threads hold 20 jobs; the last ones stay queued.
    ids = backend.submit_many([chat(i, max_tokens=2000) for i in range(30)], batch_id="cancel",
                              jobs_per_message=1)
    queued = ids[-1]
    assert backend.get(queued).status == "queued"
    assert backend.cancel(queued)
    assert backend.get(queued).status == "cancelled"

    running = ids[0]
    poll(lambda: backend.get(running).status == "running", what="a running job")
    time.sleep(0.5)  # let it decode a few tokens
    assert backend.cancel(running)
    rec = backend.wait(running, timeout=20)
    assert rec.status == "cancelled"
    assert rec.result["choices"][0]["finish_reason"] == "cancelled"
    assert rec.result["usage"]["completion_tokens"] < 2000

    assert backend.cancel_batch("cancel") >= 20
    recs = wait_all(backend, ids, timeout=60)
    assert {r.status for r in recs} == {"cancelled"}
    never_ran = backend.get(queued)
    assert (never_ran.attempts, never_ran.started_at, never_ran.worker) == (0, None, None)
    assert not backend.cancel(queued)  # already finished
    # the workers are free again: a new job runs at once
    assert wait_all(backend, backend.submit_many([chat(99, 4)]), timeout=30)[0].status == "succeeded"


def test_kill_9_a_worker_with_20_jobs_in_flight_loses_nothing(url, tiny_model_path, tmp_path):
    env = {"LLAMAQ_VISIBILITY_TIMEOUT": "8", "LLAMAQ_HEARTBEAT_TTL": "3", "LLAMAQ_RESTORE_INTERVAL": "1"}
    args = ["--model-name", "killtest"]  # its own queue: the other tests' workers stay out of it
    victim, survivor = [start_worker(url, tiny_model_path, parallel=16, log_dir=tmp_path, env=env,
                                     extra_args=args) for _ in range(2)]
    try:
        victim_name, survivor_name = victim.wait_ready(), survivor.wait_ready()
        backend = RedisBackend(url)
        ids = backend.submit_many([("chat", {**chat(i, 16)[1], "model": "killtest"}) for i in range(64)],
                                  batch_id="kill", jobs_per_message=1)

        def victim_jobs():
            held = [r.id for r in backend.get_many(ids) if r.status == "running" and r.worker == victim_name]
            return held if len(held) >= 20 else None

        held = poll(victim_jobs, what="20 jobs running on the victim", every=0.02)
        victim.kill()
        killed_at = time.time()
        recs = wait_all(backend, ids, timeout=150)
    finally:
        victim.kill()
        survivor.stop()
    assert [r.status for r in recs] == ["succeeded"] * 64, "jobs lost or failed"
    by_id = {r.id: r for r in recs}
    rerun = [j for j in held if by_id[j].worker == survivor_name]
    assert len(rerun) >= 15 and all(by_id[j].attempts == 2 for j in rerun)
    # any other held job had finished in the instant between the look and the kill
    assert all(by_id[j].finished_at <= killed_at for j in held if j not in rerun)
    # each result recorded exactly once: one terminal transition per job
    assert backend.batch_counts("kill")["succeeded"] == 64
    assert backend.store.model_counts("killtest")["succeeded"] == 64
    assert sum(backend.batch_counts("kill")[k] for k in ("queued", "running", "failed", "cancelled")) == 0


def test_redis_restart_with_queued_jobs_loses_none(tiny_model_path, tmp_path):
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        backend = RedisBackend(server.url)
        ids = backend.submit_many([("chat", {**chat(i, 4)[1], "model": "restarted"}) for i in range(24)],
                                  batch_id="restart")
        rec = backend.get(ids[0])
        assert rec.status == "queued" and "no worker serves model 'restarted'" in rec.detail
        backend.close()
        server.restart()
        backend = RedisBackend(server.url)
        assert backend.batch_counts("restart")["queued"] == 24
        w = start_worker(server.url, tiny_model_path, parallel=8, log_dir=tmp_path,
                         extra_args=["--model-name", "restarted"])
        try:
            w.wait_ready()
            recs = wait_all(backend, ids, timeout=90)
        finally:
            w.stop()
        assert [r.status for r in recs] == ["succeeded"] * 24
        assert backend.get(ids[0]).detail is None
        backend.close()
    finally:
        server.stop()


@pytest.mark.parametrize("via_celery", [False, True])
def test_a_worker_whose_model_fails_to_load_exits_and_takes_no_message(url, tmp_path, via_celery):
    """Celery logs and ignores an error in its worker_init signal: a worker that
    could not load its model would take messages with no engine and drop them."""
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(4096))
    model = f"broken{int(via_celery)}"
    backend = RedisBackend(url)
    try:
        rec = backend.submit("chat", {**chat(0, 4)[1], "model": model}, priority="interactive")
        w = start_worker(url, broken, parallel=2, log_dir=tmp_path, via_celery=via_celery,
                         env={"LLAMAQ_MODEL_NAME": model})
        try:
            rc = w.proc.wait(timeout=30)
        finally:
            w.kill()
        assert rc != 0, w.tail()
        assert "broken.gguf" in w.tail(200)
        assert backend.client.llen(f"llamaq.{model}.interactive") == 1  # its message is still there
        assert backend.get(rec.id).status == "queued"
    finally:
        backend.close()
