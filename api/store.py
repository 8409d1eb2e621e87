"""Where files and batches live: LocalStore (memory, optionally a directory) or
RedisStore (shared by every API process). Records are OpenAI objects as dicts
plus an "owner" key (a hash of the API key that made them; "" without keys),
which routes strip before answering."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import orjson

from jobs.batches import FINAL_BATCH_STATES
from jobs.record import Recent

RECENT_JOBS = 1000  # job ids remembered per owner for `llamaq jobs`
READ_CHUNK = 1 << 20  # file contents are read and written in pieces this big
FINAL_BATCH_TTL_S = 30 * 86400  # a finished batch's record is kept this long


class Store(Protocol):
    def put_file(self, meta: dict, content: bytes) -> None: ...
    def get_file(self, file_id: str) -> dict | None: ...
    def file_content(self, file_id: str) -> bytes | None: ...
    def iter_file_lines(self, file_id: str) -> Iterator[bytes] | None: ...  # streamed; None: no such file
    def open_file_writer(self, meta: dict): ...  # .write(bytes) pieces, then .commit(meta) puts the file
    def delete_file(self, file_id: str) -> bool: ...
    def list_files(self, owner: str) -> list[dict]: ...  # newest first
    def put_batch(self, batch: dict, holder: tuple[str, str] | None = None) -> bool: ...  # fenced by a lease
    def get_batch(self, batch_id: str) -> dict | None: ...
    def list_batches(self, owner: str) -> list[dict]: ...  # newest first
    def unfinished_batches(self) -> list[dict]: ...
    def add_job(self, owner: str, job_id: str) -> None: ...
    def job_owner(self, job_id: str) -> str | None: ...
    def recent_jobs(self, owner: str, n: int) -> list[str]: ...  # newest first
    def acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool: ...
    def release_lease(self, name: str, holder: str) -> None: ...
    def set_flag(self, name: str, value: int) -> None: ...  # the first value set stays
    def get_flag(self, name: str) -> int | None: ...


def split_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    rest = b""
    for chunk in chunks:
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        yield from parts
    if rest:
        yield rest


class _LocalWriter:
    def __init__(self, store: "LocalStore", meta: dict):
        self.store, self.parts = store, []
        self.tmp = store.root / "files" / f"{meta['id']}.data.{os.getpid()}.tmp" if store.root else None
        if self.tmp:
            self.tmp.write_bytes(b"")

    def write(self, data: bytes) -> None:
        if self.tmp:
            with open(self.tmp, "ab") as f:
                f.write(data)
        else:
            self.parts.append(data)

    def commit(self, meta: dict) -> None:
        if self.tmp:
            self.tmp.replace(self.store.root / "files" / f"{meta['id']}.data")
        self.store.put_file(meta, None if self.tmp else b"".join(self.parts))


class LocalStore:
    """One process. With root, file contents and records are also written under
    root (files/, batches/) and read back on start, so a restart keeps them."""

    def __init__(self, root: str | Path | None = None):
        self._lock = threading.Lock()
        self._files: dict[str, dict] = {}
        self._contents: dict[str, bytes] = {}
        self._batches: dict[str, dict] = {}
        self._job_owner: dict[str, str] = {}
        self._recent: dict[str, list[str]] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._flags: dict[str, int] = {}
        self.root = Path(root) if root else None
        if self.root:
            for sub in ("files", "batches"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            self._load()

    def _load(self) -> None:
        for p in (self.root / "files").glob("*.json"):
            meta = orjson.loads(p.read_bytes())
            self._files[meta["id"]] = meta
        for p in (self.root / "batches").glob("*.json"):
            rec = orjson.loads(p.read_bytes())
            self._batches[rec["batch"]["id"]] = rec["batch"]

    def _write(self, path: Path, data: bytes) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    # files
    def put_file(self, meta: dict, content: bytes | None) -> None:
        """content None: already written under root (open_file_writer)."""
        with self._lock:
            self._files[meta["id"]] = dict(meta)
            if self.root:
                if content is not None:
                    self._write(self.root / "files" / f"{meta['id']}.data", content)
                self._write(self.root / "files" / f"{meta['id']}.json", orjson.dumps(meta))
            else:
                self._contents[meta["id"]] = content

    def get_file(self, file_id: str) -> dict | None:
        with self._lock:
            meta = self._files.get(file_id)
            return dict(meta) if meta else None

    def file_content(self, file_id: str) -> bytes | None:
        with self._lock:
            if file_id not in self._files:
                return None
            if not self.root:
                return self._contents.get(file_id)
        return (self.root / "files" / f"{file_id}.data").read_bytes()

    def iter_file_lines(self, file_id: str) -> Iterator[bytes] | None:
        with self._lock:
            if file_id not in self._files:
                return None
            if not self.root:
                return iter(self._contents.get(file_id, b"").split(b"\n"))
        return self._read_lines(self.root / "files" / f"{file_id}.data")

    @staticmethod
    def _read_lines(path: Path) -> Iterator[bytes]:
        with open(path, "rb") as f:
            yield from split_lines(iter(lambda: f.read(READ_CHUNK), b""))

    def open_file_writer(self, meta: dict) -> _LocalWriter:
        return _LocalWriter(self, meta)

    def delete_file(self, file_id: str) -> bool:
        with self._lock:
            if self._files.pop(file_id, None) is None:
                return False
            self._contents.pop(file_id, None)
            if self.root:
                for suffix in (".data", ".json"):
                    (self.root / "files" / f"{file_id}{suffix}").unlink(missing_ok=True)
            return True

    def list_files(self, owner: str) -> list[dict]:
        with self._lock:
            files = [dict(m) for m in self._files.values() if m.get("owner", "") == owner]
        return sorted(files, key=lambda m: (m["created_at"], m["id"]), reverse=True)

    # batches
    def put_batch(self, batch: dict, holder: tuple[str, str] | None = None) -> bool:
        with self._lock:
            if holder is not None and self._leases.get(holder[0], ("",))[0] != holder[1]:
                return False
            self._batches[batch["id"]] = dict(batch)
            if batch["status"] in FINAL_BATCH_STATES:
                self._flags.pop(f"cancel:{batch['id']}", None)  # (RedisStore's flags expire)
            if self.root:
                self._write(self.root / "batches" / f"{batch['id']}.json", orjson.dumps({"batch": batch}))
            return True

    def get_batch(self, batch_id: str) -> dict | None:
        with self._lock:
            b = self._batches.get(batch_id)
            return dict(b) if b else None

    def list_batches(self, owner: str) -> list[dict]:
        with self._lock:
            bs = [dict(b) for b in self._batches.values() if b.get("owner", "") == owner]
        return sorted(bs, key=lambda b: (b["created_at"], b["id"]), reverse=True)

    def unfinished_batches(self) -> list[dict]:
        with self._lock:
            return [dict(b) for b in self._batches.values() if b["status"] not in FINAL_BATCH_STATES]

    # single jobs (owner and recency; the records themselves live in the backend)
    def add_job(self, owner: str, job_id: str) -> None:
        with self._lock:
            self._job_owner[job_id] = owner
            recent = self._recent.setdefault(owner, [])
            recent.append(job_id)
            if len(recent) > 2 * RECENT_JOBS:
                for old in recent[:-RECENT_JOBS]:
                    self._job_owner.pop(old, None)
                del recent[:-RECENT_JOBS]

    def job_owner(self, job_id: str) -> str | None:
        with self._lock:
            return self._job_owner.get(job_id)

    def recent_jobs(self, owner: str, n: int) -> list[str]:
        with self._lock:
            return list(reversed(self._recent.get(owner, [])[-n:]))

    def acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        now = time.monotonic()
        with self._lock:
            cur = self._leases.get(name)
            if cur and cur[0] != holder and cur[1] > now:
                return False
            self._leases[name] = (holder, now + ttl_s)
            return True

    def release_lease(self, name: str, holder: str) -> None:
        with self._lock:
            if self._leases.get(name, ("",))[0] == holder:
                del self._leases[name]

    def set_flag(self, name: str, value: int) -> None:
        with self._lock:
            self._flags.setdefault(name, value)

    def get_flag(self, name: str) -> int | None:
        with self._lock:
            return self._flags.get(name)


# KEYS: batch, owner's index, open set, lease; ARGV: json, created_at, id, holder, final ttl (0: open)
_PUT_BATCH = """
if ARGV[4] ~= '' and redis.call('GET', KEYS[4]) ~= ARGV[4] then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
if tonumber(ARGV[5]) > 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('SREM', KEYS[3], ARGV[3])
else
  redis.call('SADD', KEYS[3], ARGV[3])
end
return 1
"""


_LEASE = """
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


class _RedisWriter:
    """Appends to a temporary key; commit renames it into place with the meta."""

    def __init__(self, store: "RedisStore", meta: dict):
        self.store = store
        self.tmp = store._k("file", meta["id"], "content", "tmp", os.urandom(6).hex())

    def write(self, data: bytes) -> None:
        pipe = self.store.r.pipeline()
        pipe.append(self.tmp, data)
        pipe.expire(self.tmp, 86400)  # a writer that died leaves nothing for long
        pipe.execute()

    def commit(self, meta: dict) -> None:
        pipe = self.store.r.pipeline()
        pipe.append(self.tmp, b"")  # an empty file has had no write to create its key
        pipe.persist(self.tmp)
        pipe.rename(self.tmp, self.store._k("file", meta["id"], "content"))
        pipe.set(self.store._k("file", meta["id"]), orjson.dumps(meta))
        pipe.zadd(self.store._k("files", meta.get("owner", "")), {meta["id"]: meta["created_at"]})
        pipe.execute()


def lost_batch(batch: dict) -> dict:
    """A batch whose record Redis lost, as callers see it: failed, saying so."""
    return dict(batch, status="failed", failed_at=int(time.time()), errors={"object": "list", "data": [{
        "code": "batch_lost", "param": None, "line": None,
        "message": "the queue's Redis lost this batch (restarted without its data); submit it again"}]})


class RedisStore:
    """Shared by every API process behind one Redis. Keys under prefix.

    It also remembers, in memory, the latest batches and job owners it wrote:
    when Redis restarts without its data, a batch this process took is answered
    as failed (batch_lost), not 404 as if its id had never been given out."""

    def __init__(self, url: str, prefix: str = "llamaq:api:", job_ttl_s: int = 7 * 86400):
        from jobs.settings import Settings

        self.r = Settings.from_env().redis_client(url)
        self.p = prefix
        self.job_ttl_s = job_ttl_s
        self._put_batch = self.r.register_script(_PUT_BATCH)
        self._lease = self.r.register_script(_LEASE)
        self._batches_written, self._owners_written = Recent(2_000), Recent()

    def _k(self, *parts: str) -> str:
        return self.p + ":".join(parts)

    # files
    def put_file(self, meta: dict, content: bytes) -> None:
        pipe = self.r.pipeline()
        pipe.set(self._k("file", meta["id"], "content"), content)
        pipe.set(self._k("file", meta["id"]), orjson.dumps(meta))
        pipe.zadd(self._k("files", meta.get("owner", "")), {meta["id"]: meta["created_at"]})
        pipe.execute()

    def get_file(self, file_id: str) -> dict | None:
        raw = self.r.get(self._k("file", file_id))
        return orjson.loads(raw) if raw else None

    def file_content(self, file_id: str) -> bytes | None:
        return self.r.get(self._k("file", file_id, "content"))

    def iter_file_lines(self, file_id: str) -> Iterator[bytes] | None:
        key = self._k("file", file_id, "content")
        if not self.r.exists(key):
            return None
        return split_lines(self._pieces(key))

    def _pieces(self, key: str) -> Iterator[bytes]:
        pos = 0
        while piece := self.r.getrange(key, pos, pos + READ_CHUNK - 1):
            pos += len(piece)
            yield piece

    def open_file_writer(self, meta: dict) -> _RedisWriter:
        return _RedisWriter(self, meta)

    def delete_file(self, file_id: str) -> bool:
        meta = self.get_file(file_id)
        if meta is None:
            return False
        pipe = self.r.pipeline()
        pipe.delete(self._k("file", file_id), self._k("file", file_id, "content"))
        pipe.zrem(self._k("files", meta.get("owner", "")), file_id)
        pipe.execute()
        return True

    def list_files(self, owner: str) -> list[dict]:
        return self._list("files", "file", owner)

    def _list(self, index: str, kind: str, owner: str) -> list[dict]:
        ids = [i.decode() for i in self.r.zrevrange(self._k(index, owner), 0, -1)]
        if not ids:
            return []
        raws = self.r.mget([self._k(kind, i) for i in ids])
        gone = [i for i, raw in zip(ids, raws) if not raw]
        if gone:  # expired records leave the index too
            self.r.zrem(self._k(index, owner), *gone)
        return [orjson.loads(raw) for raw in raws if raw]

    # batches
    def put_batch(self, batch: dict, holder: tuple[str, str] | None = None) -> bool:
        """False (nothing written) when holder = (lease, holder) no longer holds the lease."""
        keys = [self._k("batch", batch["id"]), self._k("batches", batch.get("owner", "")),
                self._k("batches-open"), self._k("lease", holder[0]) if holder else self._k("lease", "-")]
        ttl = FINAL_BATCH_TTL_S if batch["status"] in FINAL_BATCH_STATES else 0
        ok = bool(self._put_batch(keys=keys, args=[orjson.dumps(batch), batch["created_at"], batch["id"],
                                                    holder[1] if holder else "", ttl]))
        if ok:
            self._batches_written.put(batch["id"], dict(batch))
        return ok

    def get_batch(self, batch_id: str) -> dict | None:
        raw = self.r.get(self._k("batch", batch_id))
        if raw:
            return orjson.loads(raw)
        b = self._batches_written.get(batch_id)
        if b is None or (b["status"] in FINAL_BATCH_STATES
                         and time.time() > (b.get(f"{b['status']}_at") or 0) + FINAL_BATCH_TTL_S):
            return None  # never written here, or expired as it should
        return lost_batch(b)

    def list_batches(self, owner: str) -> list[dict]:
        return self._list("batches", "batch", owner)

    def unfinished_batches(self) -> list[dict]:
        ids = [i.decode() for i in self.r.smembers(self._k("batches-open"))]
        out = []
        for i in ids:
            b = self.get_batch(i)
            if b and b["status"] not in FINAL_BATCH_STATES:
                out.append(b)
        return out

    # single jobs
    def add_job(self, owner: str, job_id: str) -> None:
        pipe = self.r.pipeline()
        pipe.set(self._k("job", job_id, "owner"), owner, ex=self.job_ttl_s)
        pipe.lpush(self._k("jobs", owner), job_id)
        pipe.ltrim(self._k("jobs", owner), 0, RECENT_JOBS - 1)
        pipe.execute()
        self._owners_written.put(job_id, owner)

    def job_owner(self, job_id: str) -> str | None:
        raw = self.r.get(self._k("job", job_id, "owner"))
        return raw.decode() if raw is not None else self._owners_written.get(job_id)

    def recent_jobs(self, owner: str, n: int) -> list[str]:
        return [j.decode() for j in self.r.lrange(self._k("jobs", owner), 0, n - 1)]

    def acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take the lease, or extend it if holder has it (atomically)."""
        return bool(self._lease(keys=[self._k("lease", name)], args=[holder, int(ttl_s * 1000)]))

    def release_lease(self, name: str, holder: str) -> None:
        self._lease(keys=[self._k("lease", name)], args=[holder, 1])  # expires at once if still ours

    def set_flag(self, name: str, value: int) -> None:
        self.r.set(self._k("flag", name), value, ex=self.job_ttl_s, nx=True)

    def get_flag(self, name: str) -> int | None:
        value = self.r.get(self._k("flag", name))
        return None if value is None else int(value)
