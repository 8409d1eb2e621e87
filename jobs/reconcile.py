"""The reconciler: progress is a property of the job records, not of a live
thread or a message.

Every worker runs sweep() on a timer; a Redis lock lets one of them at a time
do it. A sweep reads the running jobs and the queued ones not sent or changed
for a while ({prefix}:open; a running job's score is 0) and
  - a job running on a worker that is dead, or alive but no longer holding it
    (its finish lost in a Redis rollback): back to queued, or failed after
    max_attempts (JobStore.recover, atomic against a concurrent finish);
  - a queued job that no message in the broker carries (lost with a Redis
    rollback, or acknowledged by a worker that could not run it), or that only
    a delivered, unacknowledged message carries which no live worker holds (its
    worker died before claiming it: kombu would hand it out again only after the
    visibility timeout, an hour by default): sent again.
A message sent twice is harmless: the claim in the record decides who runs a job.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Iterable

import orjson
import redis

from .record import TERMINAL
from .settings import TASK_NAME, queue_name
from .store import JobStore

log = logging.getLogger("llamaq.reconcile")

# kombu's Redis transport: a queue is a list per priority step (name, name + SEP + step),
# and a message delivered but not acknowledged waits in the UNACKED hash.
SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"  # delivery tag -> when it was delivered
# a worker reports a message it took at its next heartbeat; kombu stamps the delivery
# a moment before Celery reserves it
DELIVERY_SLACK_S = 1.0
SEND_CHUNK = 64


def _job_ids_of(raw: str, task_name: str) -> list[str]:
    msg = orjson.loads(raw)
    if isinstance(msg, list):  # an unacked entry: [message, exchange, routing key]
        msg = msg[0]
    if msg.get("headers", {}).get("task") != task_name:
        return []
    body = msg["body"]
    if msg.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args = orjson.loads(body)[0]
    return list(args[0]) if args else []


def message_job_ids(client: redis.Redis, queues: Iterable[str],
                    task_name: str = TASK_NAME) -> tuple[set[str], dict[str, float]]:
    """(ids some message waiting in these queues carries, id -> when the message
    carrying it was delivered, for the messages delivered and not acknowledged)."""
    pipe = client.pipeline(transaction=False)
    for q in queues:
        for step in PRIORITY_STEPS:
            pipe.lrange(q if not step else f"{q}{SEP}{step}", 0, -1)
    pipe.hgetall(UNACKED)
    pipe.zrange(UNACKED_INDEX, 0, -1, withscores=True)
    *lists, unacked, index = pipe.execute()
    waiting: set[str] = set()
    for raw in (raw for raws in lists for raw in raws):
        waiting.update(_ids_or_none(raw, task_name))
    when = dict(index)
    delivered: dict[str, float] = {}
    for tag, raw in unacked.items():
        for jid in _ids_or_none(raw, task_name):
            delivered[jid] = min(delivered.get(jid, when.get(tag, 0.0)), when.get(tag, 0.0))
    return waiting, delivered


def _ids_or_none(raw: str, task_name: str) -> list[str]:
    try:
        return _job_ids_of(raw, task_name)
    except (ValueError, KeyError, IndexError, TypeError):
        return []  # another app's message


class Reconciler:
    def __init__(self, store: JobStore, publish: Callable[[list[str], str, str], None], name: str):
        self.store, self.publish, self.name = store, publish, name
        self.lock_key = f"{store.p}:sweep-lock"
        self._stalled_at = float("-inf")

    def redis_stalled(self) -> None:
        """Redis just failed this worker's heartbeat or sweep, or kept a sweep waiting:
        the other workers' heartbeats may have lapsed meanwhile, and a live worker
        would look dead until it beats again. Sweeps wait a heartbeat TTL."""
        self._stalled_at = time.monotonic()

    def _stalled(self) -> bool:
        return time.monotonic() - self._stalled_at < self.store.s.heartbeat_ttl

    def sweep(self) -> dict[str, int]:
        """One pass; {} when another process holds the sweep or Redis just restarted,
        failed or stalled."""
        s, r = self.store.s, self.store.r
        if self._stalled():
            return {}
        t0 = time.monotonic()
        locked = r.set(self.lock_key, self.name, nx=True, px=int(max(1.0, s.sweep_interval) * 1000))
        if time.monotonic() - t0 > s.heartbeat_ttl / 2:  # it waited out a Redis stall (a frozen Redis)
            self.redis_stalled()
        if not locked or self._stalled():
            return {}
        if int(r.info("server").get("uptime_in_seconds", 0)) < s.heartbeat_ttl:
            return {}  # after a restart, live workers have not beaten yet: they would look dead
        ids = self.store.open_jobs(time.time() - s.resend_grace)
        if not ids:
            return {}
        rows = self.store.open_fields(ids)
        queues = {queue_name(row[3], row[4]) for row in rows if row[0] == "queued"}
        waiting, delivered = message_job_ids(r, queues) if queues else (set(), {})
        names = {row[1] for row in rows if row[0] == "running" and row[1]}
        holdings = self.store.holdings(sorted(names | (self.store.worker_names() if delivered else set())))
        if self._stalled():  # this worker's heartbeat just found Redis stalled
            return {}
        carried = waiting | self._held_messages(delivered, holdings)
        gone, fine, resend, counts = [], [], {}, {"requeued": 0, "resent": 0, "failed": 0}
        for jid, (status, owner, started, model, priority) in zip(ids, rows):
            if status is None or status in TERMINAL:
                gone.append(jid)
                continue
            if status == "running":
                held_at, held = holdings.get(owner, (None, ()))
                if held_at is not None and (jid in held or float(started or 0) >= held_at):
                    continue  # looked at again next sweep (its score stays 0)
                outcome = self.store.recover(jid, owner or "", started or "")
                if outcome == "failed":
                    counts["failed"] += 1
                if outcome != "queued":
                    continue
                counts["requeued"] += 1
                log.warning("job %s: its worker %s died or lost it; queued again", jid, owner)
            elif jid in carried:
                fine.append(jid)
                continue
            resend.setdefault((model, priority), []).append(jid)
        self.store.forget_open(gone)
        self.store.mark_sent(fine)  # looked at again after resend_grace, not at every sweep
        for (model, priority), jids in resend.items():
            for i in range(0, len(jids), SEND_CHUNK):
                self.publish(jids[i : i + SEND_CHUNK], model, priority)
            self.store.mark_sent(jids)
            counts["resent"] += len(jids)
        if counts["resent"]:
            log.warning("reconciler: %s", counts)
        return counts

    @staticmethod
    def _held_messages(delivered: dict[str, float], holdings: dict[str, tuple[float, set[str]]]) -> set[str]:
        """The delivered jobs a live worker holds in a message, or may hold: delivered
        after some live worker's last report. The rest were delivered to a worker now dead."""
        held = set().union(*(h for _, h in holdings.values()))
        last_report = min((at for at, _ in holdings.values()), default=float("inf"))
        return {jid for jid, at in delivered.items() if jid in held or at > last_report - DELIVERY_SLACK_S}
