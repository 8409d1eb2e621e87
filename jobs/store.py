"""Job records in Redis.

One hash per job ({prefix}:job:{id}); every status change goes through a Lua
script, so a change is atomic with the batch counters, the stats, the result
expiry and the end-of-stream marker. That is what makes results exactly-once:
a worker's result is written only while the record says that worker runs it.

Keys (prefix "llamaq"):
    llamaq:job:{id}          hash: the record, plus body (JSON) and stream flag
    llamaq:batch:{bid}       hash: total, queued, running, succeeded, failed, cancelled
    llamaq:batch:{bid}:jobs  list: job ids in submission order
    llamaq:cancel            set: running jobs asked to cancel
    llamaq:stats             hash: counters (submitted, started, succeeded, ...)
    llamaq:model:{name}      hash: jobs per status for that model (queued/running: now)
    llamaq:stream:{id}       stream: token deltas, then an "end" entry
    llamaq:done              pub/sub channel: ids of jobs that just finished
    llamaq:workers           set of worker names; llamaq:worker:{name} their heartbeat
    llamaq:held:{name}       set: the jobs that worker runs, claims or holds in a message it took
                             (rewritten each heartbeat)
    llamaq:open              sorted set: every unfinished job, scored by when it was last sent
                             or changed, a running one 0 (the reconciler's index, jobs/reconcile.py)
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from .record import JobRecord
from .settings import Settings

# Shared Lua: move a job between statuses, keeping every counter in step.
_PRELUDE = """
local P = ARGV[1]
local function jkey(id) return P .. ':job:' .. id end
local function move(id, from, to, now, ttl)
  local k = jkey(id)
  redis.call('HSET', k, 'status', to)
  local f = redis.call('HMGET', k, 'batch_id', 'model')
  local bid = f[1]
  local mk = P .. ':model:' .. (f[2] or '')
  redis.call('HINCRBY', mk, from, -1)
  redis.call('HINCRBY', mk, to, 1)
  local bk = nil
  if bid and bid ~= '' then
    bk = P .. ':batch:' .. bid
    redis.call('HINCRBY', bk, from, -1)
    redis.call('HINCRBY', bk, to, 1)
  end
  if to == 'running' then
    redis.call('HINCRBY', P .. ':stats', 'started', 1)
    redis.call('ZADD', P .. ':open', 0, id)  -- looked at by every sweep: its worker may die any time
    return
  end
  if to == 'queued' then
    redis.call('HINCRBY', P .. ':stats', 'retried', 1)
    redis.call('ZADD', P .. ':open', now, id)
    return
  end
  redis.call('ZREM', P .. ':open', id)
  redis.call('HINCRBY', P .. ':stats', to, 1)
  redis.call('HSET', k, 'finished_at', now)
  redis.call('SREM', P .. ':cancel', id)
  if ttl > 0 then redis.call('EXPIRE', k, ttl) end
  if redis.call('HGET', k, 'stream') == '1' then
    local sk = P .. ':stream:' .. id
    redis.call('XADD', sk, '*', 'end', to)
    if ttl > 0 then redis.call('EXPIRE', sk, ttl) end
  end
  if bk and ttl > 0 then
    local open = (tonumber(redis.call('HGET', bk, 'queued')) or 0)
               + (tonumber(redis.call('HGET', bk, 'running')) or 0)
    if open <= 0 then
      redis.call('EXPIRE', bk, ttl)
      redis.call('EXPIRE', bk .. ':jobs', ttl)
    end
  end
  redis.call('PUBLISH', P .. ':done', id)
end
"""

_LOST = """
local function fail_lost(id, st, attempts, now, ttl)
  local err = cjson.encode({message = 'the job was running on a worker that died or lost it, ' .. attempts ..
    ' time(s); giving up', type = 'server_error', param = cjson.null, code = 'worker_lost'})
  redis.call('HSET', jkey(id), 'error', err)
  move(id, st, 'failed', now, ttl)
end
local function fail_stream(id, st, now, ttl)
  local err = cjson.encode({message = 'the worker streaming this job died after sending part of the ' ..
    'output; it is not run again, which would send that part twice', type = 'server_error',
    param = cjson.null, code = 'stream_interrupted'})
  redis.call('HSET', jkey(id), 'error', err)
  move(id, st, 'failed', now, ttl)
end
"""

# ARGV: prefix, id, worker, now, max_attempts, ttl, takeover
_CLAIM = _PRELUDE + _LOST + """
local id, me, now, maxa, ttl = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local k = jkey(id)
local st = redis.call('HGET', k, 'status')
if not st then return {'missing'} end
if st == 'succeeded' or st == 'failed' or st == 'cancelled' then return {'done', st} end
if redis.call('SISMEMBER', P .. ':cancel', id) == 1 then
  move(id, st, 'cancelled', now, ttl)
  return {'cancelled'}
end
local attempts = tonumber(redis.call('HGET', k, 'attempts')) or 0
if st == 'running' then
  local owner = redis.call('HGET', k, 'worker') or ''
  if ARGV[7] ~= '1' then
    if owner == me then return {'mine'} end
    if owner ~= '' and redis.call('EXISTS', P .. ':worker:' .. owner) == 1 then
      return {'busy', owner}
    end
  end
  -- its worker died mid-run (or left it): run it again, unless it has used its attempts
  if attempts >= maxa then
    fail_lost(id, st, attempts, now, ttl)
    return {'failed'}
  end
end
if attempts > 0 and redis.call('HGET', k, 'stream') == '1' and
   redis.call('XLEN', P .. ':stream:' .. id) > 0 then
  -- the client has part of an earlier attempt's text: a rerun would send it again
  fail_stream(id, st, now, ttl)
  return {'failed'}
end
redis.call('HSET', k, 'worker', me, 'started_at', now)
attempts = redis.call('HINCRBY', k, 'attempts', 1)
if st ~= 'running' then move(id, st, 'running', now, ttl) end
local f = redis.call('HMGET', k, 'kind', 'model', 'body', 'stream', 'priority')
return {'claimed', f[1], f[2], f[3], f[4], tostring(attempts), f[5]}
"""

# ARGV: prefix, id, worker, status, result, error, progress, now, ttl
_FINISH = _PRELUDE + """
local id, me, to = ARGV[2], ARGV[3], ARGV[4]
local k = jkey(id)
local st = redis.call('HGET', k, 'status')
local owner = redis.call('HGET', k, 'worker') or ''
-- queued and nobody's: its claim was lost (a Redis rollback) or the reconciler
-- put it back while it ran here; nobody else runs it, so this result counts
if not ((st == 'running' and owner == me) or (st == 'queued' and (owner == '' or owner == me))) then
  redis.call('HINCRBY', P .. ':stats', 'stale_results', 1)
  return 0
end
redis.call('HSET', k, 'result', ARGV[5], 'error', ARGV[6], 'progress', ARGV[7], 'worker', me)
move(id, st, to, ARGV[8], tonumber(ARGV[9]))
return 1
"""

# ARGV: prefix, id, owner, started_at, now, max_attempts, ttl.  The reconciler: a job
# running on a worker that died or no longer holds it goes back to queued (or
# fails after max attempts), unless it changed since the reconciler looked.
_RECOVER = _PRELUDE + _LOST + """
local id, owner, started = ARGV[2], ARGV[3], ARGV[4]
local now, maxa, ttl = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local k = jkey(id)
local f = redis.call('HMGET', k, 'status', 'worker', 'started_at', 'attempts', 'stream')
if f[1] ~= 'running' or (f[2] or '') ~= owner or (f[3] or '') ~= started then return 'changed' end
local attempts = tonumber(f[4]) or 0
if attempts >= maxa then
  fail_lost(id, 'running', attempts, now, ttl)
  return 'failed'
end
if f[5] == '1' and redis.call('XLEN', P .. ':stream:' .. id) > 0 then
  fail_stream(id, 'running', now, ttl)
  return 'failed'
end
redis.call('HSET', k, 'worker', '')
move(id, 'running', 'queued', now, ttl)
return 'queued'
"""

# ARGV: prefix, id, worker, error, now
_REQUEUE = _PRELUDE + """
local id, me = ARGV[2], ARGV[3]
local k = jkey(id)
if redis.call('HGET', k, 'status') ~= 'running' or redis.call('HGET', k, 'worker') ~= me then
  return 0
end
redis.call('HSET', k, 'worker', '', 'error', ARGV[4])
move(id, 'running', 'queued', ARGV[5], 0)
return 1
"""

# ARGV: prefix, id, now, ttl.  -> 'cancelled' (was queued, or running on a dead
# worker), 'cancelling' (running: its worker stops it), '' (finished), 'missing'
_CANCEL = _PRELUDE + """
local id = ARGV[2]
local st = redis.call('HGET', jkey(id), 'status')
if not st then return 'missing' end
local owner = redis.call('HGET', jkey(id), 'worker') or ''
if st == 'queued' or (st == 'running' and redis.call('EXISTS', P .. ':worker:' .. owner) == 0) then
  -- a dead worker stops nothing: without this a cancel would wait for another worker's reconciler
  move(id, st, 'cancelled', ARGV[3], tonumber(ARGV[4]))
  return 'cancelled'
end
if st == 'running' then
  redis.call('SADD', P .. ':cancel', id)
  return 'cancelling'
end
return ''
"""

# ARGV: prefix, now, ttl, JSON [[id, kind, model, priority, batch_id, body, stream, error, custom_id], ...]
# Idempotent: an id that exists is left alone (a batch's submission can be
# repeated after its runner died). Returns the ids that are queued, to be sent.
_CREATE = """
local P, now, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local queued, n, nfailed = {}, 0, 0
for _, j in ipairs(cjson.decode(ARGV[4])) do
  local k = P .. ':job:' .. j[1]
  local st = redis.call('HGET', k, 'status')
  if st then
    if st == 'queued' then queued[#queued + 1] = j[1] end
  else
    local failed = j[8] ~= ''
    st = failed and 'failed' or 'queued'
    redis.call('HSET', k, 'id', j[1], 'kind', j[2], 'model', j[3], 'status', st, 'created_at', now,
               'attempts', 0, 'priority', j[4], 'batch_id', j[5], 'body', j[6], 'stream', j[7],
               'custom_id', j[9])
    redis.call('HINCRBY', P .. ':model:' .. j[3], st, 1)
    if j[5] ~= '' then
      local bk = P .. ':batch:' .. j[5]
      redis.call('HINCRBY', bk, 'total', 1)
      redis.call('HINCRBY', bk, st, 1)
      redis.call('PERSIST', bk)
      redis.call('RPUSH', bk .. ':jobs', j[1])
      redis.call('PERSIST', bk .. ':jobs')
    end
    n = n + 1
    if failed then
      nfailed = nfailed + 1
      redis.call('HSET', k, 'error', j[8], 'finished_at', now)
      if ttl > 0 then redis.call('EXPIRE', k, ttl) end
    else
      redis.call('ZADD', P .. ':open', now, j[1])
      queued[#queued + 1] = j[1]
    end
  end
end
redis.call('HINCRBY', P .. ':stats', 'submitted', n)
if nfailed > 0 then redis.call('HINCRBY', P .. ':stats', 'failed', nfailed) end
return queued
"""
CREATE_CHUNK = 1000
STREAM_MAXLEN = 20_000  # deltas kept per streaming job  # jobs per script call: keeps each call to a few ms of Redis time

_FLOATS = ("created_at", "started_at", "finished_at")
_JSONS = ("progress", "result", "error")


@dataclass
class NewJob:
    id: str
    kind: str
    model: str
    body: dict
    priority: str = "batch"
    batch_id: str | None = None
    stream: bool = False
    custom_id: str | None = None  # a batch line's custom_id, kept beside its result


@dataclass
class Claim:
    state: str  # claimed | mine | busy | done | cancelled | failed | missing
    kind: str = ""
    model: str = ""
    body: dict | None = None
    stream: bool = False
    attempts: int = 0
    owner: str = ""
    priority: str = "batch"


def _dumps(v: Any) -> str:
    return "" if v is None else orjson.dumps(v).decode()


class JobStore:
    def __init__(self, client: redis.Redis, settings: Settings | None = None):
        self.r = client
        self.s = settings or Settings.from_env()
        p = self.s.prefix
        self.p = p
        self.cancel_key = f"{p}:cancel"
        self.stats_key = f"{p}:stats"
        self.done_channel = f"{p}:done"
        self.workers_key = f"{p}:workers"
        self._create = client.register_script(_CREATE)
        self._claim = client.register_script(_CLAIM)
        self._finish = client.register_script(_FINISH)
        self._requeue = client.register_script(_REQUEUE)
        self._cancel = client.register_script(_CANCEL)
        self._recover = client.register_script(_RECOVER)
        self.open_key = f"{p}:open"

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None) -> "JobStore":
        settings = settings or Settings.from_env()
        return cls(settings.redis_client(url, decode_responses=True), settings)

    # -- keys --
    def job_key(self, job_id: str) -> str:
        return f"{self.p}:job:{job_id}"

    def batch_key(self, batch_id: str) -> str:
        return f"{self.p}:batch:{batch_id}"

    def stream_key(self, job_id: str) -> str:
        return f"{self.p}:stream:{job_id}"

    def model_key(self, model: str) -> str:
        return f"{self.p}:model:{model}"

    def worker_key(self, name: str) -> str:
        return f"{self.p}:worker:{name}"

    # -- records --
    def create_many(self, jobs: list[NewJob], failed: dict[str, dict] | None = None,
                    now: float | None = None) -> list[str]:
        """Write the records (and batch counters): queued, or failed at once for
        the ids in `failed` (id -> error dict: a bad body). An id that exists is
        left as it is. Returns the ids now queued (to send). The records go to
        Redis as one JSON array per chunk, unpacked by a Lua script: packing ten
        fields per job in redis-py was the bulk-submit cost."""
        now = time.time() if now is None else now
        failed = failed or {}
        rows = []
        for j in jobs:
            err = failed.get(j.id)
            rows.append([j.id, j.kind, j.model, j.priority, j.batch_id or "",
                         "" if err is not None else _dumps(j.body), "1" if j.stream else "0",
                         "" if err is None else _dumps(err), j.custom_id or ""])
        pipe = self.r.pipeline(transaction=False)
        for i in range(0, len(rows), CREATE_CHUNK):
            self._create(args=[self.p, now, self.s.result_ttl, orjson.dumps(rows[i : i + CREATE_CHUNK])],
                         client=pipe)
        return [jid for part in pipe.execute() for jid in part]

    def get(self, job_id: str) -> JobRecord | None:
        return self._parse(self.r.hgetall(self.job_key(job_id)))

    def get_many(self, job_ids: Iterable[str]) -> list[JobRecord | None]:
        pipe = self.r.pipeline(transaction=False)
        for jid in job_ids:
            pipe.hgetall(self.job_key(jid))
        return [self._parse(h) for h in pipe.execute()]

    def body(self, job_id: str) -> dict | None:
        raw = self.r.hget(self.job_key(job_id), "body")
        return orjson.loads(raw) if raw else None

    @staticmethod
    def _parse(h: dict) -> JobRecord | None:
        if not h:
            return None
        d: dict[str, Any] = {k: (v if v != "" else None) for k, v in h.items()}
        for k in _FLOATS:
            if d.get(k) is not None:
                d[k] = float(d[k])
        for k in _JSONS:
            if d.get(k) is not None:
                d[k] = orjson.loads(d[k])
        d["attempts"] = int(d.get("attempts") or 0)
        return JobRecord.from_dict(d)

    # -- transitions (worker side) --
    def claim(self, job_id: str, worker: str, takeover: bool = False) -> Claim:
        out = self._claim(args=[self.p, job_id, worker, time.time(), self.s.max_attempts,
                                self.s.result_ttl, "1" if takeover else "0"])
        state = out[0]
        if state == "claimed":
            return Claim(state, kind=out[1], model=out[2], body=orjson.loads(out[3]),
                         stream=out[4] == "1", attempts=int(out[5]), priority=out[6])
        if state == "busy":
            return Claim(state, owner=out[1])
        return Claim(state)

    def finish(self, job_id: str, worker: str, status: str, result: dict | None = None,
               error: dict | None = None, progress: dict | None = None) -> bool:
        """Record the outcome; False when this worker no longer owns the job
        (someone else finished it, or took it over): the result is dropped."""
        return bool(self._finish(args=[self.p, job_id, worker, status, _dumps(result), _dumps(error),
                                       _dumps(progress), time.time(), self.s.result_ttl]))

    def recover(self, job_id: str, owner: str, started_at: str) -> str:
        """A running job whose worker died or lost it: 'queued' (send it again),
        'failed' (out of attempts) or 'changed' (it moved on since it was read)."""
        return self._recover(args=[self.p, job_id, owner, started_at, time.time(), self.s.max_attempts,
                                   self.s.result_ttl])

    def open_jobs(self, before: float, count: int = 10_000) -> list[str]:
        """Unfinished jobs not sent or changed since `before` (oldest first)."""
        return self.r.zrangebyscore(self.open_key, "-inf", before, start=0, num=count)

    def open_fields(self, job_ids: list[str]) -> list[list]:
        pipe = self.r.pipeline(transaction=False)
        for jid in job_ids:
            pipe.hmget(self.job_key(jid), "status", "worker", "started_at", "model", "priority")
        return pipe.execute()

    def mark_sent(self, job_ids: list[str]) -> None:
        if job_ids:
            now = time.time()
            self.r.zadd(self.open_key, {j: now for j in job_ids}, xx=True)

    def forget_open(self, job_ids: list[str]) -> None:
        if job_ids:
            self.r.zrem(self.open_key, *job_ids)

    def requeue(self, job_id: str, worker: str, error: dict) -> bool:
        """Put a job that failed (retryably) back to queued; the caller re-sends its message."""
        return bool(self._requeue(args=[self.p, job_id, worker, _dumps(error), time.time()]))

    def set_progress(self, job_id: str, progress: dict) -> None:
        self.r.hset(self.job_key(job_id), "progress", _dumps(progress))

    def cancel(self, job_id: str) -> str:
        """'cancelled' (it was queued: it will never run), 'cancelling' (running:
        its worker stops it), '' (already finished) or 'missing'."""
        return self._cancel(args=[self.p, job_id, time.time(), self.s.result_ttl])

    def cancel_many(self, job_ids: list[str]) -> list[str]:
        pipe = self.r.pipeline(transaction=False)
        now = time.time()
        for jid in job_ids:
            self._cancel(args=[self.p, jid, now, self.s.result_ttl], client=pipe)
        return pipe.execute()

    def cancel_requested(self, job_ids: list[str]) -> list[bool]:
        if not job_ids:
            return []
        return [bool(x) for x in self.r.smismember(self.cancel_key, job_ids)]

    # -- batches and stats --
    def batch_counts(self, batch_id: str) -> dict[str, int]:
        h = self.r.hgetall(self.batch_key(batch_id))
        keys = ("total", "queued", "running", "succeeded", "failed", "cancelled")
        return {k: int(h.get(k, 0)) for k in keys}

    def batch_job_ids(self, batch_id: str) -> list[str]:
        return self.r.lrange(self.batch_key(batch_id) + ":jobs", 0, -1)

    def model_counts(self, model: str) -> dict[str, int]:
        return {k: int(v) for k, v in self.r.hgetall(self.model_key(model)).items()}

    def known_models(self) -> list[str]:
        n = len(self.p) + len(":model:")
        return sorted(k[n:] for k in self.r.scan_iter(match=self.model_key("*"), count=1000))

    def stats(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.r.hgetall(self.stats_key).items()}

    def incr_stats(self, **counts: int) -> None:
        pipe = self.r.pipeline(transaction=False)
        for k, v in counts.items():
            if v:
                pipe.hincrby(self.stats_key, k, v)
        pipe.execute()

    # -- streams --
    def add_delta(self, job_id: str, text: str, index: int = 0) -> None:
        # capped: a reader that fell this far behind gets the final record anyway
        self.r.xadd(self.stream_key(job_id), {"d": text, "i": index}, maxlen=STREAM_MAXLEN, approximate=True)

    def read_stream(self, job_id: str, last_id: str, block_ms: int) -> list[tuple[str, dict]]:
        block_ms = min(block_ms, self.s.max_block_ms)  # a reply later than the socket timeout is an error
        out = self.r.xread({self.stream_key(job_id): last_id}, block=block_ms, count=256)
        return out[0][1] if out else []

    # -- workers --
    def held_key(self, name: str) -> str:
        return f"{self.p}:held:{name}"

    def heartbeat(self, name: str, info: dict, held: Iterable[str] = (), held_at: float | None = None) -> None:
        """The worker's info, and the jobs it held at held_at (all at once: the
        reconciler reads "not in the set" as "not held")."""
        ttl = int(self.s.heartbeat_ttl * 1000)
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self.worker_key(name), _dumps({**info, "held_at": held_at or time.time()}), px=ttl)
        pipe.sadd(self.workers_key, name)
        hk = self.held_key(name)
        pipe.delete(hk)
        held = list(held)
        if held:
            pipe.sadd(hk, *held)
            pipe.pexpire(hk, ttl)
        pipe.execute()

    def holdings(self, names: list[str]) -> dict[str, tuple[float, set[str]]]:
        """name -> (held_at, job ids) for each of those workers that is alive."""
        pipe = self.r.pipeline(transaction=False)
        for n in names:
            pipe.get(self.worker_key(n))
            pipe.smembers(self.held_key(n))
        out = pipe.execute()
        return {n: (float(orjson.loads(info).get("held_at", 0)), held)
                for n, info, held in zip(names, out[::2], out[1::2]) if info is not None}

    def worker_names(self) -> set[str]:
        """Every registered worker, dead ones included until live_workers() prunes them."""
        return self.r.smembers(self.workers_key)

    def unregister(self, name: str) -> None:
        self.r.delete(self.worker_key(name), self.held_key(name))
        self.r.srem(self.workers_key, name)

    def live_workers(self) -> list[dict]:
        names = sorted(self.r.smembers(self.workers_key))
        if not names:
            return []
        infos = self.r.mget([self.worker_key(n) for n in names])
        dead = [n for n, i in zip(names, infos) if i is None]
        if dead:
            self.r.srem(self.workers_key, *dead)
        return [orjson.loads(i) for i in infos if i is not None]
