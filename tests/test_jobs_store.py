"""The job store's transitions on a real redis-server: exactly-once results,
takeover of jobs whose worker died, attempts, cancellation, batch counters."""

from __future__ import annotations

import time

import pytest

from jobs.settings import Settings
from jobs.store import JobStore, NewJob



@pytest.fixture
def store(redis_url) -> JobStore:
    return JobStore.from_url(redis_url, Settings(redis_url=redis_url, max_attempts=3, result_ttl=600,
                                                 heartbeat_ttl=30))


def _job(i: int, batch: str | None = "b1") -> NewJob:
    return NewJob(f"job_{i}", "chat", "m", {"messages": [{"role": "user", "content": str(i)}]}, "batch", batch)


def _alive(store: JobStore, *names: str) -> None:
    for n in names:
        store.heartbeat(n, {"name": n, "models": ["m"], "parallel": 4})


def test_a_result_is_recorded_once(store):
    store.create_many([_job(1)])
    _alive(store, "A")
    c = store.claim("job_1", "A")
    assert (c.state, c.kind, c.attempts, c.body["messages"][0]["content"]) == ("claimed", "chat", 1, "1")
    assert store.finish("job_1", "A", "succeeded", result={"x": 1})
    assert not store.finish("job_1", "A", "succeeded", result={"x": 2})  # a second run's result is dropped
    assert store.claim("job_1", "B").state == "done"  # a redelivery runs nothing
    rec = store.get("job_1")
    assert (rec.status, rec.result, rec.attempts, rec.worker) == ("succeeded", {"x": 1}, 1, "A")
    assert store.batch_counts("b1") == {"total": 1, "queued": 0, "running": 0, "succeeded": 1, "failed": 0,
                                        "cancelled": 0}
    assert store.stats()["succeeded"] == 1 and store.stats()["stale_results"] == 1
    assert 0 < store.r.ttl(store.job_key("job_1")) <= 600  # finished results expire
    assert store.r.ttl(store.batch_key("b1")) > 0


def test_a_job_of_a_dead_worker_is_taken_over_and_a_live_ones_is_not(store):
    store.create_many([_job(1), _job(2)])
    _alive(store, "A")
    assert store.claim("job_1", "A").state == "claimed"
    assert store.claim("job_1", "A").state == "mine"
    c = store.claim("job_1", "B")
    assert (c.state, c.owner) == ("busy", "A")  # A is alive: B must not run it too
    store.unregister("A")  # A's heartbeat lapses
    c = store.claim("job_1", "B")
    assert (c.state, c.attempts) == ("claimed", 2)
    assert not store.finish("job_1", "A", "succeeded", result={"by": "A"})  # the dead one's result is dropped
    assert store.finish("job_1", "B", "succeeded", result={"by": "B"})
    assert store.get("job_1").result == {"by": "B"}
    assert store.r.ttl(store.job_key("job_2")) == -1  # queued records never expire


def test_a_job_whose_workers_keep_dying_fails_after_max_attempts(store):
    store.create_many([_job(1)])
    for w in ("A", "B", "C"):
        assert store.claim("job_1", w).state == "claimed"  # none of them heartbeats: all dead
    assert store.claim("job_1", "D").state == "failed"
    rec = store.get("job_1")
    assert (rec.status, rec.attempts, rec.error["code"]) == ("failed", 3, "worker_lost")
    assert store.batch_counts("b1")["failed"] == 1 and store.batch_counts("b1")["running"] == 0


def test_requeue_puts_a_job_back(store):
    store.create_many([_job(1)])
    _alive(store, "A")
    store.claim("job_1", "A")
    assert store.requeue("job_1", "A", {"message": "boom"})
    rec = store.get("job_1")
    assert (rec.status, rec.worker, rec.error) == ("queued", None, {"message": "boom"})
    assert store.claim("job_1", "A").attempts == 2


def test_cancel_queued_and_running(store):
    store.create_many([_job(1), _job(2), _job(3)])
    _alive(store, "A")
    assert store.cancel("job_1") == "cancelled"
    assert store.claim("job_1", "A").state == "done"  # a cancelled queued job never runs
    store.claim("job_2", "A")
    assert store.cancel("job_2") == "cancelling"
    assert store.cancel_requested(["job_2", "job_3"]) == [True, False]
    assert store.finish("job_2", "A", "cancelled")
    assert store.cancel_requested(["job_2"]) == [False]
    assert store.cancel("job_2") == "" and store.cancel("nope") == "missing"
    counts = store.batch_counts("b1")
    assert (counts["cancelled"], counts["queued"]) == (2, 1)


def test_cancel_of_a_running_job_whose_worker_died(store):
    store.create_many([_job(1), _job(2)])
    _alive(store, "A")
    store.claim("job_1", "A")
    store.claim("job_2", "A")
    assert store.cancel("job_1") == "cancelling"
    store.r.delete(store.worker_key("A"))  # A dies: its heartbeat lapses
    assert store.claim("job_1", "B").state == "cancelled"  # a redelivery ends it
    assert store.cancel("job_2") == "cancelled"  # nobody would stop it: a cancel ends it at once
    assert not store.finish("job_2", "A", "succeeded")  # A was only starved: its late result is dropped
    assert store.get("job_2").status == "cancelled" and store.batch_counts("b1")["running"] == 0


def test_bad_bodies_are_failed_at_creation(store):
    store.create_many([_job(1), _job(2), _job(3)], failed={"job_2": {"message": "bad", "param": "messages"}})
    rec = store.get("job_2")
    assert (rec.status, rec.error["param"], rec.attempts) == ("failed", "messages", 0)
    assert rec.finished_at is not None and store.r.ttl(store.job_key("job_2")) > 0
    assert store.get("job_1").status == "queued" and store.get("job_1").created_at == rec.created_at
    assert store.body("job_1")["messages"][0]["content"] == "1"
    counts = store.batch_counts("b1")
    assert (counts["total"], counts["failed"], counts["queued"]) == (3, 1, 2)
    assert store.batch_job_ids("b1") == ["job_1", "job_2", "job_3"]  # submission order
    assert store.model_counts("m") == {"queued": 2, "failed": 1}


def test_stream_end_marker_is_written_with_the_status(store):
    job = _job(1, batch=None)
    job.stream = True
    store.create_many([job])
    _alive(store, "A")
    store.claim("job_1", "A")
    store.add_delta("job_1", "Hel", 0)
    store.add_delta("job_1", "lo", 0)
    store.finish("job_1", "A", "succeeded", result={})
    entries = store.read_stream("job_1", "0-0", block_ms=10)
    assert [f.get("d") for _, f in entries] == ["Hel", "lo", None]
    assert entries[-1][1] == {"end": "succeeded"}


def test_creating_a_job_that_exists_changes_nothing(store):
    assert store.create_many([_job(1), _job(2)]) == ["job_1", "job_2"]
    store.claim("job_1", "A")
    # a batch submission repeated after a crash: job_1 runs on, job_2 is sent again, nothing counts twice
    assert store.create_many([_job(1), _job(2), _job(3)]) == ["job_2", "job_3"]
    assert store.get("job_1").status == "running"
    counts = store.batch_counts("b1")
    assert (counts["total"], counts["queued"], counts["running"]) == (3, 2, 1)
    assert store.batch_job_ids("b1") == ["job_1", "job_2", "job_3"]
    assert store.stats()["submitted"] == 3


def test_a_result_counts_when_the_claim_was_lost(store):
    """A Redis rollback lost the claim: the record says queued while a worker
    ran the job. Its result is recorded once; a later claim finds it done."""
    store.create_many([_job(1)])
    store.claim("job_1", "A")
    assert store.recover("job_1", "A", store.r.hget(store.job_key("job_1"), "started_at")) == "queued"
    assert store.finish("job_1", "A", "succeeded", result={"by": "A"})
    assert store.claim("job_1", "B").state == "done"
    assert store.batch_counts("b1")["succeeded"] == 1 and store.batch_counts("b1")["queued"] == 0
    assert store.r.zscore(store.open_key, "job_1") is None


def test_a_retried_streaming_job_that_had_sent_text_fails_instead_of_repeating_it(store):
    job = _job(1, batch=None)
    job.stream = True
    store.create_many([job])
    store.claim("job_1", "A")  # A dies after streaming a delta
    store.add_delta("job_1", "Hel", 0)
    assert store.claim("job_1", "B").state == "failed"
    rec = store.get("job_1")
    assert (rec.status, rec.error["code"]) == ("failed", "stream_interrupted")


# ---------------------------------------------------------------- the reconciler


def _reconciler(store):
    from jobs.reconcile import Reconciler

    sent = []
    return Reconciler(store, lambda ids, model, prio: sent.append((list(ids), model, prio)), "sweeper"), sent


def _swept(store, reconciler):
    while store.r.info("server")["uptime_in_seconds"] < store.s.heartbeat_ttl:  # a fresh server: sweeps wait
        time.sleep(0.1)
    store.r.delete(reconciler.lock_key)
    store.r.zadd(store.open_key, {j: 0 for j in store.r.zrange(store.open_key, 0, -1)}, xx=True)  # all due
    return reconciler.sweep()


@pytest.fixture
def sweep_store(redis_url) -> JobStore:
    return JobStore.from_url(redis_url, Settings(redis_url=redis_url, max_attempts=2, result_ttl=600,
                                                 heartbeat_ttl=1.0, resend_grace=0))


def test_reconciler_resends_a_queued_job_no_message_carries(sweep_store):
    from jobs.celery_app import make_app
    from jobs.tasks import send_jobs

    store = sweep_store
    store.create_many([_job(1), _job(2)])
    send_jobs(make_app(store.s), ["job_2"], "m", "batch")  # a real Celery message carries job_2 only
    rec, sent = _reconciler(store)
    assert _swept(store, rec)["resent"] == 1
    assert sent == [(["job_1"], "m", "batch")]


def test_reconciler_requeues_a_job_its_live_worker_no_longer_holds(sweep_store):
    store = sweep_store
    store.create_many([_job(1), _job(2)])
    store.claim("job_1", "A")
    store.claim("job_2", "A")
    store.heartbeat("A", {"name": "A"}, held=["job_2"])  # A is alive and holds job_2 only
    rec, sent = _reconciler(store)
    assert _swept(store, rec) == {"requeued": 1, "resent": 1, "failed": 0}
    assert sent == [(["job_1"], "m", "batch")]
    assert store.get("job_1").status == "queued" and store.get("job_2").status == "running"
    # a redelivered message now runs it (no endless 'busy': nobody owns it)
    assert store.claim("job_1", "B").state == "claimed"


def test_reconciler_fails_a_job_after_max_attempts(sweep_store):
    store = sweep_store
    store.create_many([_job(1)])
    rec, sent = _reconciler(store)
    for w in ("A", "B"):
        store.claim("job_1", w)  # no heartbeat: the worker is dead
        _swept(store, rec)
    r = store.get("job_1")
    assert (r.status, r.attempts, r.error["code"]) == ("failed", 2, "worker_lost")
    assert len(sent) == 1 and store.r.zscore(store.open_key, "job_1") is None


def test_reconciler_resends_the_jobs_of_a_message_a_dead_worker_took(sweep_store):
    """A delivered, unacknowledged message (kombu's unacked hash) carries a job
    only while a live worker holds it or may not have reported it yet."""
    from jobs.celery_app import make_app
    from jobs.tasks import send_jobs

    store = sweep_store
    store.create_many([_job(i) for i in (1, 2, 3)])
    app = make_app(store.s)
    for i in (1, 2, 3):
        send_jobs(app, [f"job_{i}"], "m", "batch")
    with app.connection_for_read() as conn:
        q = conn.SimpleQueue("llamaq.m.batch", no_ack=False)
        taken = [q.get(timeout=5) for _ in range(2)]  # job_1's and job_2's messages, not acknowledged
        assert store.r.hlen("unacked") == 2
        rec, sent = _reconciler(store)
        store.heartbeat("A", {"name": "A"}, held=["job_2"], held_at=time.time() - 30)  # reported before delivery
        assert _swept(store, rec)["resent"] == 0  # A may hold job_1 too: not reported yet
        store.heartbeat("A", {"name": "A"}, held=["job_2"], held_at=time.time() + 2)
        assert _swept(store, rec)["resent"] == 1  # job_1's worker is gone; job_3 waits in its queue
        assert sent == [(["job_1"], "m", "batch")]
        for m in taken:
            m.ack()
        q.close()
