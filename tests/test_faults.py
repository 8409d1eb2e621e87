"""Fault injection: a real redis-server (AOF), real `llamaq worker` processes and
real `llamaq serve --redis` processes, killed by pid while a batch (and a few
single /v1/jobs) is in flight. Each fault must end with every line answered
exactly once and the batch completed.

Short timings come from the LLAMAQ_* settings in ENV: a dead worker is noticed
after 4 s, the reconciler sweeps every second, a batch lease lasts 3 s."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest
import redis

from redis_fixtures import ROOT, RedisServer, WorkerProcess, free_port, start_worker, wait_http_ready

MODEL = "faults"  # the workers serve the tiny model under this name
# (max attempts raised: on a loaded box a starved worker can look dead and its jobs run again)
ENV = {"LLAMAQ_VISIBILITY_TIMEOUT": "10", "LLAMAQ_HEARTBEAT_TTL": "4", "LLAMAQ_MAX_ATTEMPTS": "10",
       "LLAMAQ_RESTORE_INTERVAL": "1", "LLAMAQ_SWEEP_INTERVAL": "1", "LLAMAQ_RESEND_GRACE": "2", "LLAMAQ_REDIS_RETRY_S": "3",
       "LLAMAQ_BATCH_LEASE_S": "3", "LLAMAQ_BATCH_POLL_S": "0.3", "LLAMAQ_BATCH_SUBMIT_CHUNK": "4",
       "LLAMAQ_REDIS_SOCKET_TIMEOUT": "2"}
LINES = 40
DONE_S = 90  # every wait for the end of a batch gives up after this


# ---------------------------------------------------------------- processes


@dataclass
class ApiProcess:
    proc: subprocess.Popen
    url: str
    log: Path

    def wait_ready(self, timeout: float = 60) -> "ApiProcess":
        wait_http_ready(self.proc, self.url, (200, 503), timeout, self.log)
        return self

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def start_api(redis_url: str, log_dir: Path, settings: dict = ENV, port: int | None = None) -> ApiProcess:
    port = port or free_port()
    env = dict(os.environ, **settings, PYTHONPATH=str(ROOT))
    log = log_dir / f"api-{time.monotonic_ns()}.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "cli.serve", "--redis", redis_url, "--port", str(port),
                                 "--log-level", "warning"], cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    return ApiProcess(proc, f"http://127.0.0.1:{port}", log).wait_ready()


@dataclass
class Fleet:
    redis: RedisServer
    model_path: Path
    logs: Path
    workers: list[WorkerProcess]
    api: ApiProcess | None = None
    env: dict = field(default_factory=lambda: ENV)
    parallel: int = 8

    def start_worker(self) -> WorkerProcess:
        w = start_worker(self.redis.url, self.model_path, parallel=self.parallel, log_dir=self.logs, env=self.env,
                         extra_args=["--model-name", MODEL])
        w.wait_ready()
        return w

    def ensure(self) -> None:
        """Everything up again after the last test's fault."""
        if not self.redis.alive:
            self.redis.start()
        self.workers = [w for w in self.workers if w.proc.poll() is None]
        while len(self.workers) < 2:
            self.workers.append(self.start_worker())
        if self.api is None or self.api.proc.poll() is not None:
            self.api = start_api(self.redis.url, self.logs, self.env)

    def r(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url, decode_responses=True, socket_timeout=5)

    def close(self) -> None:
        if self.api:
            self.api.kill()
        for w in self.workers:
            w.kill()
        self.redis.stop()


@pytest.fixture(scope="module")
def fleet(tiny_model_path, tmp_path_factory):
    logs = tmp_path_factory.mktemp("fault-logs")
    server = RedisServer(tmp_path_factory.mktemp("fault-redis"))
    server.start()
    f = Fleet(server, tiny_model_path, logs, [])
    try:
        f.ensure()
        yield f
    finally:
        f.close()


# ---------------------------------------------------------------- batches and jobs over HTTP


def _get(url: str, timeout: float = 5) -> dict | None:
    """GET a JSON body; None while the API or its Redis is down."""
    try:
        r = httpx.get(url, timeout=timeout)
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None


def submit_batch(api: str, n: int = LINES, max_tokens: int = 8, tag: str = "b") -> str:
    lines = [{"custom_id": f"{tag}-{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": MODEL, "messages": [{"role": "user", "content": f"Tell me about {tag} {i}."}],
                       "max_tokens": max_tokens, "temperature": 0}} for i in range(n)]
    content = b"".join(orjson.dumps(x) + b"\n" for x in lines)
    f = httpx.post(f"{api}/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}, timeout=30)
    assert f.status_code == 200, f.text
    b = httpx.post(f"{api}/v1/batches", json={"input_file_id": f.json()["id"], "endpoint": "/v1/chat/completions",
                                              "completion_window": "24h"}, timeout=30)
    assert b.status_code == 200, b.text
    return b.json()["id"]


def submit_jobs(api: str, k: int = 4) -> list[str]:
    ids = []
    for i in range(k):
        r = httpx.post(f"{api}/v1/jobs", json={"endpoint": "/v1/completions", "body": {
            "model": MODEL, "prompt": f"Job {i}:", "max_tokens": 6, "temperature": 0}}, timeout=30)
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    return ids


def wait_done(fleet: Fleet, bid: str, at_least: int) -> None:
    """Until at least that many lines of the batch are answered (the fault then hits mid-batch)."""
    deadline = time.monotonic() + DONE_S
    while time.monotonic() < deadline:
        h = fleet.r().hgetall(f"llamaq:batch:{bid}")
        if int(h.get("succeeded", 0)) + int(h.get("failed", 0)) >= at_least:
            return
        time.sleep(0.02)
    raise AssertionError(f"batch {bid}: fewer than {at_least} lines answered after {DONE_S}s")


def wait_batch_end(apis, bid: str, timeout: float = DONE_S) -> tuple[dict, float]:
    """(the finished batch, seconds it took); polls whichever API answers."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        for api in apis() if callable(apis) else apis:
            b = _get(f"{api}/v1/batches/{bid}")
            if b and b["status"] in ("completed", "failed", "cancelled", "expired"):
                return b, time.monotonic() - t0
        time.sleep(0.1)
    raise AssertionError(f"batch {bid} not finished {timeout}s after the fault")


def assert_exactly_once(fleet: Fleet, api: str, batch: dict, n: int = LINES, tag: str = "b") -> None:
    assert batch["status"] == "completed", batch
    assert batch["request_counts"] == {"total": n, "completed": n, "failed": 0}, batch["request_counts"]
    assert batch["error_file_id"] is None
    out = httpx.get(f"{api}/v1/files/{batch['output_file_id']}/content", timeout=30)
    lines = [orjson.loads(x) for x in out.content.splitlines() if x.strip()]
    seen = collections.Counter(line["custom_id"] for line in lines)
    assert seen == collections.Counter(f"{tag}-{i}" for i in range(n)), "lines lost or answered twice"
    for line in lines:  # each answer is its own line's: the job record kept its custom_id
        job = fleet.r().hget(f"llamaq:job:{line['response']['request_id']}", "custom_id")
        assert job == line["custom_id"]
    counts = fleet.r().hgetall(f"llamaq:batch:{batch['id']}")
    # one terminal transition per job: a second would count twice
    assert {k: int(counts.get(k, 0)) for k in ("total", "succeeded", "queued", "running", "failed")} == \
        {"total": n, "succeeded": n, "queued": 0, "running": 0, "failed": 0}


def assert_jobs_succeeded(api: str, ids: list[str]) -> None:
    deadline = time.monotonic() + DONE_S
    for jid in ids:
        while (job := _get(f"{api}/v1/jobs/{jid}")) is None or job["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, f"job {jid} did not finish: {job}"
            time.sleep(0.1)
        assert job["status"] == "succeeded", job


def report(name: str, seconds: float) -> None:
    print(f"\nfault {name}: batch completed {seconds:.1f}s after the fault ended")


# ---------------------------------------------------------------- the faults


def _redis_kill(fleet: Fleet, down_s: float) -> None:
    fleet.redis.stop(kill=True)
    time.sleep(down_s)
    fleet.redis.start()


FAULTS = {
    # Redis kill -9 and back at once from its AOF
    "redis_kill9": lambda fleet: _redis_kill(fleet, 0.5),
    # Redis gone for longer than the workers' retry window (3 s here)
    "redis_down_past_retry_window": lambda fleet: _redis_kill(fleet, 8),
    # a worker kill -9 (its jobs are taken over); the next test starts a new one
    "worker_kill9": lambda fleet: fleet.workers[0].kill(),
    # a worker SIGTERM: warm shutdown finishes what it holds
    "worker_sigterm": lambda fleet: fleet.workers[0].stop(timeout=60),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_batch_and_jobs_survive(fleet, fault):
    fleet.ensure()
    api = fleet.api.url
    bid = submit_batch(api, tag=fault)
    jobs = submit_jobs(api)
    wait_done(fleet, bid, 8)
    FAULTS[fault](fleet)
    b, took = wait_batch_end([api], bid)
    report(fault, took)
    assert_exactly_once(fleet, api, b, tag=fault)
    assert_jobs_succeeded(api, jobs)
    if fault.startswith("redis"):  # a broker outage must not stop a worker (kombu's restore on close)
        assert all(w.proc.poll() is None for w in fleet.workers), "a worker exited during the Redis outage"


def test_redis_frozen_past_retry_window_and_health_still_answers(fleet):
    """Redis SIGSTOPped (a silent Redis: connections stay open, nothing answers)
    for longer than the workers' retry window (3 s here): every client times out
    instead of hanging, /health answers while Redis is frozen, and after SIGCONT
    the batch completes."""
    fleet.ensure()
    api = fleet.api.url
    bid = submit_batch(api, tag="frozen")
    jobs = submit_jobs(api)
    wait_done(fleet, bid, 8)
    fleet.redis.proc.send_signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        # Within about one socket timeout (2 s here). Without llamaq's timeouts the
        # ping waits redis-py's default 5 s at least (Celery's publish and ack: forever).
        health = httpx.get(f"{api}/health", timeout=4.5)
        assert health.status_code == 503 and "imeout" in health.text, health.text
        time.sleep(max(0.0, 8 - (time.monotonic() - t0)))
    finally:
        fleet.redis.proc.send_signal(signal.SIGCONT)
    b, took = wait_batch_end([api], bid)
    report("redis_frozen_8s", took)
    assert_exactly_once(fleet, api, b, tag="frozen")
    assert_jobs_succeeded(api, jobs)


def test_api_kill9_and_a_new_api_process_finishes_the_batch(fleet):
    fleet.ensure()
    bid = submit_batch(fleet.api.url, tag="api")
    jobs = submit_jobs(fleet.api.url)
    wait_done(fleet, bid, 8)
    fleet.api.kill()
    fleet.api = start_api(fleet.redis.url, fleet.logs)
    b, took = wait_batch_end([fleet.api.url], bid)
    report("api_kill9", took)
    assert_exactly_once(fleet, fleet.api.url, b, tag="api")
    assert_jobs_succeeded(fleet.api.url, jobs)


def test_api_kill9_during_submission_queues_no_line_twice(fleet):
    """Killed between submit chunks (4 lines each here): the next process submits
    the batch again from the start; the lines already queued are not queued twice."""
    fleet.ensure()
    n = 160
    bid = submit_batch(fleet.api.url, n=n, max_tokens=2, tag="sub")
    r = fleet.r()
    deadline = time.monotonic() + 30
    while int(r.hget(f"llamaq:batch:{bid}", "total") or 0) == 0:
        assert time.monotonic() < deadline, "submission did not start"
    fleet.api.kill()
    queued_at_kill = int(r.hget(f"llamaq:batch:{bid}", "total") or 0)
    fleet.api = start_api(fleet.redis.url, fleet.logs)
    b, took = wait_batch_end([fleet.api.url], bid)
    report(f"api_kill9_during_submission ({queued_at_kill}/{n} lines queued at the kill)", took)
    assert 0 < queued_at_kill < n, "the kill missed the submission"
    assert_exactly_once(fleet, fleet.api.url, b, n=n, tag="sub")


def test_two_api_processes_run_the_same_batches(fleet):
    fleet.ensure()
    second = start_api(fleet.redis.url, fleet.logs)
    try:
        bids = [submit_batch(api, tag=f"two{i}") for i, api in enumerate([fleet.api.url, second.url] * 2)]
        for i, bid in enumerate(bids):
            b, took = wait_batch_end([second.url, fleet.api.url], bid)
            assert_exactly_once(fleet, second.url, b, tag=f"two{i}")
        report("two_api_processes", took)
    finally:
        second.stop()


def test_worker_kill9_with_64_jobs_in_one_message(fleet):
    from jobs.remote import RedisBackend

    fleet.ensure()
    backend = RedisBackend(fleet.redis.url)
    try:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Count."}], "max_tokens": 8,
                "temperature": 0}
        ids = backend.submit_many([("chat", body)] * 64, batch_id="bulk", jobs_per_message=64)
        names = {w.name(): w for w in fleet.workers}
        deadline = time.monotonic() + 60
        while not (held := [r.worker for r in backend.get_many(ids) if r.status == "running"]):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        names[held[0]].kill()
        t0 = time.monotonic()
        recs = [backend.wait(j, timeout=DONE_S) for j in ids]
        report("worker_kill9_64_jobs_one_message", time.monotonic() - t0)
        assert [r.status for r in recs] == ["succeeded"] * 64
        c = backend.batch_counts("bulk")
        assert (c["total"], c["succeeded"], c["queued"], c["running"], c["failed"]) == (64, 64, 0, 0, 0)
    finally:
        backend.close()


def test_workers_killed_again_and_again_while_claiming_and_finishing(fleet):
    """One-token jobs: a worker spends its time claiming, finishing and
    acknowledging, so a kill lands in the middle of those."""
    fleet.ensure()
    bid = submit_batch(fleet.api.url, n=120, max_tokens=1, tag="churn")
    for at in (10, 40, 70):
        wait_done(fleet, bid, at)
        victim = fleet.workers.pop(0)
        victim.kill()
        fleet.workers.append(fleet.start_worker())
    b, took = wait_batch_end([fleet.api.url], bid)
    report("workers_killed_3_times", took)
    assert_exactly_once(fleet, fleet.api.url, b, n=120, tag="churn")


@contextlib.contextmanager
def own_fleet(model_path: Path, tmp_path: Path, env: dict, workers: int, parallel: int):
    """A fleet of its own (Redis, workers, an API) with these settings."""
    fleet = Fleet(RedisServer(tmp_path / "redis"), model_path, tmp_path, [], env=env, parallel=parallel)
    fleet.redis.start()
    try:
        fleet.workers.extend(fleet.start_worker() for _ in range(workers))
        fleet.api = start_api(fleet.redis.url, tmp_path, fleet.env)
        yield fleet
    finally:
        fleet.close()


@pytest.fixture
def lone_fleet(tiny_model_path, tmp_path):
    """Its own Redis, one worker and an API, for faults a second worker would
    mask. kombu's default visibility timeout: an unacknowledged message is handed
    out again after an hour."""
    with own_fleet(tiny_model_path, tmp_path, {**ENV, "LLAMAQ_VISIBILITY_TIMEOUT": "3600"}, 1, 2) as fleet:
        yield fleet


def test_redis_frozen_longer_than_a_heartbeat_runs_nothing_twice(tiny_model_path, tmp_path):
    """Redis SIGSTOPped for 10 s: longer than a heartbeat lives (6 s here), within
    the workers' retry window (30 s here). Every worker stays alive and keeps its
    results until Redis answers, but all heartbeats lapsed meanwhile: a sweep
    right after SIGCONT must not read the workers as dead and take their jobs
    back (each would run twice; a streaming one would fail stream_interrupted)."""
    # Timings that make the race likely (the next test forces it): a sweep is mostly
    # blocked in a Redis call (3 s timeout, a sweep every 0.5 s) and goes on at SIGCONT,
    # while a worker whose heartbeat timed out waits up to 2 s before its next one.
    env = {**ENV, "LLAMAQ_VISIBILITY_TIMEOUT": "3600", "LLAMAQ_REDIS_RETRY_S": "30", "LLAMAQ_HEARTBEAT_TTL": "6",
           "LLAMAQ_SWEEP_INTERVAL": "0.5", "LLAMAQ_REDIS_SOCKET_TIMEOUT": "3"}
    with own_fleet(tiny_model_path, tmp_path, env, 2, 8) as fleet:
        api = fleet.api.url
        bid = submit_batch(api, max_tokens=16, tag="hang")
        wait_done(fleet, bid, 8)
        assert int(fleet.r().hget(f"llamaq:batch:{bid}", "running") or 0) > 0, "nothing was running"
        fleet.redis.proc.send_signal(signal.SIGSTOP)
        time.sleep(10)
        fleet.redis.proc.send_signal(signal.SIGCONT)
        b, took = wait_batch_end([api], bid)
        report("redis_frozen_past_heartbeat", took)
        assert_exactly_once(fleet, api, b, tag="hang")
        stats = fleet.r().hgetall("llamaq:stats")
        assert (int(stats.get("retried", 0)), int(stats.get("started", 0))) == (0, LINES), stats


def test_a_sweep_blocked_on_a_frozen_redis_takes_back_no_live_workers_job(redis_server, redis_url):
    """The race above, forced: a sweep starts while Redis is frozen (3 s, longer
    than the 2 s heartbeat), blocks, and goes on at SIGCONT, when every heartbeat
    has lapsed though its worker is alive. It must take nothing back; once the
    worker has had a heartbeat TTL to beat again and has not, the next sweep does."""
    import threading

    from jobs.reconcile import Reconciler
    from jobs.settings import Settings
    from jobs.store import JobStore, NewJob

    s = Settings(redis_url=redis_url, heartbeat_ttl=2, resend_grace=0, sweep_interval=0.5, redis_socket_timeout=30)
    store = JobStore.from_url(redis_url, s)
    store.create_many([NewJob("j1", "completion", MODEL, {"prompt": "x"})])
    assert store.claim("j1", "w1").state == "claimed"
    store.heartbeat("w1", {}, ["j1"])
    sent = []
    reconciler = Reconciler(store, lambda ids, model, priority: sent.extend(ids), "sweeper")
    redis_server.proc.send_signal(signal.SIGSTOP)
    try:
        sweep = threading.Thread(target=reconciler.sweep)
        sweep.start()
        time.sleep(3)
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    sweep.join(30)
    assert not sweep.is_alive()
    assert (store.get("j1").status, sent) == ("running", []), "a live worker's job was taken back"
    time.sleep(2.1)  # w1 really is dead now: no heartbeat for a TTL
    reconciler.sweep()
    assert (store.get("j1").status, sent) == ("queued", ["j1"])


def test_worker_kill9_with_messages_taken_but_not_claimed(lone_fleet):
    """A worker takes more messages than it has room for (prefetched, or waiting
    in a pool thread); killed, their jobs are in no queue, only in kombu's
    unacked hash until the visibility timeout. The reconciler sends them again
    once the worker's heartbeat lapses, so the batch completes on the next worker."""
    from jobs.reconcile import UNACKED, _job_ids_of

    fleet = lone_fleet
    bid = submit_batch(fleet.api.url, n=20, tag="taken")
    wait_done(fleet, bid, 3)
    fleet.workers.pop().kill()
    delivered = [j for raw in fleet.r().hvals(UNACKED) for j in _job_ids_of(raw, "llamaq.run_jobs")]
    statuses = [fleet.r().hget(f"llamaq:job:{j}", "status") for j in delivered]
    assert "queued" in statuses, "the kill found no message taken but not claimed"
    fleet.workers.append(fleet.start_worker())
    b, took = wait_batch_end([fleet.api.url], bid, timeout=60)  # not the hour it took
    report("worker_kill9_messages_not_claimed", took)
    assert_exactly_once(fleet, fleet.api.url, b, n=20, tag="taken")


def test_batch_cancelled_after_its_only_worker_died_ends_cancelled(lone_fleet):
    """No worker is left to stop the running jobs, nor to run a reconciler: the
    batch's sweep cancels them itself once their worker's heartbeat lapses."""
    fleet = lone_fleet
    api = fleet.api.url
    bid = submit_batch(api, n=20, max_tokens=64, tag="cx")
    wait_done(fleet, bid, 1)
    fleet.workers.pop().kill()
    assert int(fleet.r().hget(f"llamaq:batch:{bid}", "running") or 0) > 0, "nothing was running at the kill"
    assert httpx.post(f"{api}/v1/batches/{bid}/cancel", timeout=10).json()["status"] == "cancelling"
    b, took = wait_batch_end([api], bid, timeout=30)
    report("batch_cancelled_only_worker_dead", took)
    assert b["status"] == "cancelled", b
    lines = [orjson.loads(x) for fid in (b["output_file_id"], b["error_file_id"]) if fid
             for x in httpx.get(f"{api}/v1/files/{fid}/content", timeout=30).content.splitlines()]
    assert collections.Counter(x["custom_id"] for x in lines) == collections.Counter(f"cx-{i}" for i in range(20))
    c = fleet.r().hgetall(f"llamaq:batch:{bid}")
    assert (int(c.get("queued", 0)), int(c.get("running", 0))) == (0, 0)
    assert b["request_counts"]["completed"] + b["request_counts"]["failed"] == 20


def test_redis_losing_its_data_answers_waiting_requests_503(fleet):
    """Redis restarted without persistence (here FLUSHALL: the same empty Redis)
    while requests wait on their jobs: each is answered 503 job_lost (retry),
    not a 404 about a job id the client never sent."""
    import threading

    fleet.ensure()
    out = {}

    def call(stream: bool) -> None:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Go on."}], "max_tokens": 400,
                "temperature": 0, "stream": stream}
        r = httpx.post(f"{fleet.api.url}/v1/chat/completions", json=body, timeout=60)
        out[stream] = (r.status_code, r.text)

    threads = [threading.Thread(target=call, args=(s,)) for s in (False, True)]
    for t in threads:
        t.start()
    r = fleet.r()
    deadline = time.monotonic() + 30
    while len([k for k in r.scan_iter("llamaq:job:*") if r.hget(k, "status") == "running"]) < 2 \
            or not list(r.scan_iter("llamaq:stream:*")):
        assert time.monotonic() < deadline, "the two requests did not start"
        time.sleep(0.05)
    r.flushall()
    for t in threads:
        t.join(60)
    status, text = out[False]
    assert status == 503 and orjson.loads(text)["error"]["code"] == "job_lost", out[False]
    status, text = out[True]  # the stream had started: its last event is the error
    events = [orjson.loads(x[6:]) for x in text.splitlines() if x.startswith("data: {")]
    assert status == 200 and events[-1]["error"]["code"] == "job_lost", text[-500:]
    deadline = time.monotonic() + 30  # the next test finds its workers registered again
    while (h := _get(f"{fleet.api.url}/health")) is None or h.get("workers", 0) < len(fleet.workers):
        assert time.monotonic() < deadline
        time.sleep(0.1)


def run_cli_through_an_api_restart(fleet: Fleet, args: list[str]) -> tuple[int, bytes, bytes]:
    """Run `llamaq ARGS...`; once its batch is open, kill -9 the API and start it
    again on the same address 3 s later. (exit status, stdout, stderr)"""
    r = fleet.r()
    open_before = r.smembers("llamaq:api:batches-open")
    proc = subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not r.smembers("llamaq:api:batches-open") - open_before:
            assert time.monotonic() < deadline and proc.poll() is None, "the batch was not submitted"
            time.sleep(0.05)
        port = int(fleet.api.url.rsplit(":", 1)[1])
        fleet.api.kill()
        time.sleep(3)
        fleet.api = start_api(fleet.redis.url, fleet.logs, port=port)
        out, err = proc.communicate(timeout=DONE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, err


def test_translate_api_rides_out_an_api_restart(fleet, tmp_path):
    """`llamaq translate --api URL` while its API is killed -9 and comes back:
    the client keeps polling its batch through the outage and finishes (before:
    'cannot reach', exit 1, the batch orphaned)."""
    import json

    fleet.ensure()
    doc = tmp_path / "a.md"
    doc.write_text("\n\n".join(f"Paragraph {i} is about cats and dogs." for i in range(12)) + "\n")
    rc, out, err = run_cli_through_an_api_restart(fleet, ["translate", str(doc), "--to", "fr", "--api", fleet.api.url,
                                                          "--model", MODEL, "--no-memory", "--max-tokens", "8",
                                                          "--json"])
    assert out.strip(), err.decode()[-2000:]
    report = json.loads(out)  # a report, not 'cannot reach'
    assert rc == (1 if report["totals"]["failed"] else 0), err.decode()[-2000:]
    assert (tmp_path / "a.fr.md").exists() and report["totals"]["unique_segments"] == 12


def test_submit_wait_rides_out_an_api_restart(fleet, tmp_path):
    """`llamaq submit FILE --wait` keeps polling through an API restart and ends
    with the batch (before: 'cannot reach the API', exit 1)."""
    fleet.ensure()
    lines = [{"custom_id": f"w-{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": MODEL, "messages": [{"role": "user", "content": f"Hi {i}"}], "max_tokens": 16}}
             for i in range(16)]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    rc, out, err = run_cli_through_an_api_restart(fleet, ["submit", str(path), "--wait", "--api", fleet.api.url])
    assert rc == 0 and err.decode().splitlines()[-1].startswith("completed: 16 done"), err.decode()[-2000:]


def test_redis_restarted_empty_the_api_says_its_batches_and_jobs_were_lost(fleet):
    """Redis kill -9 and restarted without its data (its AOF deleted: as with no
    persistence or an RDB snapshot from before) while a batch runs and jobs are
    queued, running and finished: the API process that took them answers each
    as failed with a `*_lost` error (submit it again), not a 404 about an id it
    issued itself; and the fleet runs new work."""
    import shutil

    fleet.ensure()
    api = fleet.api.url
    finished = submit_jobs(api, 1)
    assert_jobs_succeeded(api, finished)
    bid = submit_batch(api, max_tokens=32, tag="gone")
    jobs = submit_jobs(api)
    wait_done(fleet, bid, 4)
    fleet.redis.stop(kill=True)
    shutil.rmtree(fleet.redis.dir / "appendonlydir")
    fleet.redis.start()
    assert not fleet.r().exists(f"llamaq:batch:{bid}")
    b = httpx.get(f"{api}/v1/batches/{bid}", timeout=10)
    assert b.status_code == 200, b.text
    assert b.json()["status"] == "failed" and b.json()["errors"]["data"][0]["code"] == "batch_lost", b.text
    for jid in finished + jobs:
        r = httpx.get(f"{api}/v1/jobs/{jid}", timeout=10)
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["error"]["code"]) == ("failed", "job_lost"), r.text
    deadline = time.monotonic() + 30  # the workers register again
    while (h := _get(f"{api}/health")) is None or h.get("workers", 0) < len(fleet.workers):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    b, _ = wait_batch_end([api], submit_batch(api, n=8, tag="after"))
    assert_exactly_once(fleet, api, b, n=8, tag="after")


def test_a_running_job_is_taken_back_one_sweep_after_its_worker_dies(redis_url):
    """The documented bound: a dead worker's job is taken back at the first sweep
    after its heartbeat lapses, however recently a sweep last found it fine
    (before: not until the resend grace had passed again, 40 s by default, not 25)."""
    from jobs.reconcile import Reconciler
    from jobs.settings import Settings
    from jobs.store import JobStore, NewJob

    s = Settings(redis_url=redis_url, heartbeat_ttl=1, resend_grace=30, sweep_interval=0.5)
    store = JobStore.from_url(redis_url, s)
    store.create_many([NewJob("j1", "completion", MODEL, {"prompt": "x"})], now=time.time() - 60)  # a minute ago
    assert store.claim("j1", "w1").state == "claimed"
    store.heartbeat("w1", {}, ["j1"])
    sent = []
    reconciler = Reconciler(store, lambda ids, model, priority: sent.extend(ids), "sweeper")
    reconciler.sweep()
    assert (store.get("j1").status, sent) == ("running", [])  # w1 is alive and holds it
    time.sleep(1.1)  # w1 dies: its heartbeat lapses
    reconciler.sweep()
    assert (store.get("j1").status, sent) == ("queued", ["j1"])


def test_worker_sigterm_finishes_what_it_runs_and_takes_nothing_more(lone_fleet):
    """Warm shutdown with long jobs running and batch messages waiting in its pool
    threads for room: the worker finishes the jobs it runs, starts none of the
    waiting ones (they go back to the queue), and a later worker finishes the batch."""
    fleet = lone_fleet
    api = fleet.api.url
    bid = submit_batch(api, n=12, max_tokens=48, tag="term")
    wait_done(fleet, bid, 1)
    victim = fleet.workers.pop()
    name = victim.name()
    stopped_at = time.time()
    victim.proc.send_signal(signal.SIGTERM)
    victim.proc.wait(timeout=DONE_S)
    r = fleet.r()
    late = [j for j in r.lrange(f"llamaq:batch:{bid}:jobs", 0, -1)
            if r.hget(f"llamaq:job:{j}", "worker") == name
            and float(r.hget(f"llamaq:job:{j}", "started_at") or 0) > stopped_at + 0.5]
    assert late == [], "the worker claimed jobs after SIGTERM"
    assert int(r.hget(f"llamaq:batch:{bid}", "running") or 0) == 0, "it left jobs running"
    fleet.workers.append(fleet.start_worker())
    b, took = wait_batch_end([api], bid)
    report("worker_sigterm_long_jobs", took)
    assert_exactly_once(fleet, api, b, n=12, tag="term")


def test_a_job_whose_only_worker_died_is_queued_again_with_no_worker_left(lone_fleet):
    """kill -9 of the only worker while a job runs: no worker is left to sweep,
    so the API's sweep takes the job back (queued, its detail saying no worker
    serves the model) within the documented bound (2 x heartbeat TTL + sweep), instead of showing it running
    on a dead worker until some worker comes; a new worker then runs it."""
    fleet = lone_fleet
    api = fleet.api.url
    jid = httpx.post(f"{api}/v1/jobs", json={"endpoint": "/v1/completions", "body": {
        "model": MODEL, "prompt": "Long:", "max_tokens": 600, "ignore_eos": True}}, timeout=30).json()["id"]
    deadline = time.monotonic() + 30
    while (_get(f"{api}/v1/jobs/{jid}") or {}).get("status") != "running":
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.05)
    fleet.workers.pop().kill()
    # 2 x heartbeat TTL + sweep interval here (9 s), and room for a loaded machine
    deadline = time.monotonic() + 25
    while (job := _get(f"{api}/v1/jobs/{jid}") or {}).get("status") != "queued":
        assert time.monotonic() < deadline, f"still {job.get('status')} on its dead worker"
        time.sleep(0.2)
    assert "no worker serves" in (job.get("detail") or ""), job
    fleet.workers.append(fleet.start_worker())
    assert_jobs_succeeded(api, [jid])
