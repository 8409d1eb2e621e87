"""Where files and batches live: LocalStore (memory, optionally a directory) or
RedisStore (shared by every API process). Records are OpenAI objects as dicts
plus an "owner" key (a hash of the API key that made them; "" without keys),
which routes strip before answering."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Protocol

import orjson

RECENT_JOBS = 1000  # job ids remembered per owner for `llamaq jobs`


class Store(Protocol):
    def put_file(self, meta: dict, content: bytes) -> None: ...
    def get_file(self, file_id: str) -> dict | None: ...
    def file_content(self, file_id: str) -> bytes | None: ...
    def delete_file(self, file_id: str) -> bool: ...
    def list_files(self, owner: str) -> list[dict]: ...  # newest first
    def put_batch(self, batch: dict) -> None: ...
    def get_batch(self, batch_id: str) -> dict | None: ...
    def list_batches(self, owner: str) -> list[dict]: ...  # newest first
    def unfinished_batches(self) -> list[dict]: ...
    def add_batch_jobs(self, batch_id: str, job_ids: list[str]) -> None: ...
    def batch_jobs(self, batch_id: str) -> list[str]: ...
    def add_job(self, owner: str, job_id: str) -> None: ...
    def job_owner(self, job_id: str) -> str | None: ...
    def recent_jobs(self, owner: str, n: int) -> list[str]: ...  # newest first
    def acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool: ...
    def release_lease(self, name: str, holder: str) -> None: ...
    def set_flag(self, name: str) -> None: ...
    def has_flag(self, name: str) -> bool: ...


FINAL_BATCH_STATES = ("completed", "failed", "expired", "cancelled")


class LocalStore:
    """One process. With root, file contents and records are also written under
    root (files/, batches/) and read back on start, so a restart keeps them."""

    def __init__(self, root: str | Path | None = None):
        self._lock = threading.Lock()
        self._files: dict[str, dict] = {}
        self._contents: dict[str, bytes] = {}
        self._batches: dict[str, dict] = {}
        self._batch_jobs: dict[str, list[str]] = {}
        self._job_owner: dict[str, str] = {}
        self._recent: dict[str, list[str]] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._flags: set[str] = set()
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
            self._batch_jobs[rec["batch"]["id"]] = rec.get("jobs", [])

    def _write(self, path: Path, data: bytes) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    # files
    def put_file(self, meta: dict, content: bytes) -> None:
        with self._lock:
            self._files[meta["id"]] = dict(meta)
            if self.root:
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
    def put_batch(self, batch: dict) -> None:
        with self._lock:
            self._batches[batch["id"]] = dict(batch)
            self._persist_batch(batch["id"])

    def _persist_batch(self, batch_id: str) -> None:
        if self.root:
            rec = {"batch": self._batches[batch_id], "jobs": self._batch_jobs.get(batch_id, [])}
            self._write(self.root / "batches" / f"{batch_id}.json", orjson.dumps(rec))

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

    def add_batch_jobs(self, batch_id: str, job_ids: list[str]) -> None:
        with self._lock:
            self._batch_jobs.setdefault(batch_id, []).extend(job_ids)
            self._persist_batch(batch_id)

    def batch_jobs(self, batch_id: str) -> list[str]:
        with self._lock:
            return list(self._batch_jobs.get(batch_id, []))

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

    def set_flag(self, name: str) -> None:
        with self._lock:
            self._flags.add(name)

    def has_flag(self, name: str) -> bool:
        with self._lock:
            return name in self._flags


class RedisStore:
    """Shared by every API process behind one Redis. Keys under prefix."""

    def __init__(self, url: str, prefix: str = "llamaq:api:", job_ttl_s: int = 7 * 86400):
        import redis

        self.r = redis.Redis.from_url(url)
        self.p = prefix
        self.job_ttl_s = job_ttl_s

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
        return [orjson.loads(raw) for raw in raws if raw]

    # batches
    def put_batch(self, batch: dict) -> None:
        pipe = self.r.pipeline()
        pipe.set(self._k("batch", batch["id"]), orjson.dumps(batch))
        pipe.zadd(self._k("batches", batch.get("owner", "")), {batch["id"]: batch["created_at"]})
        if batch["status"] in FINAL_BATCH_STATES:
            pipe.srem(self._k("batches-open"), batch["id"])
        else:
            pipe.sadd(self._k("batches-open"), batch["id"])
        pipe.execute()

    def get_batch(self, batch_id: str) -> dict | None:
        raw = self.r.get(self._k("batch", batch_id))
        return orjson.loads(raw) if raw else None

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

    def add_batch_jobs(self, batch_id: str, job_ids: list[str]) -> None:
        if job_ids:
            self.r.rpush(self._k("batch", batch_id, "jobs"), *job_ids)

    def batch_jobs(self, batch_id: str) -> list[str]:
        return [j.decode() for j in self.r.lrange(self._k("batch", batch_id, "jobs"), 0, -1)]

    # single jobs
    def add_job(self, owner: str, job_id: str) -> None:
        pipe = self.r.pipeline()
        pipe.set(self._k("job", job_id, "owner"), owner, ex=self.job_ttl_s)
        pipe.lpush(self._k("jobs", owner), job_id)
        pipe.ltrim(self._k("jobs", owner), 0, RECENT_JOBS - 1)
        pipe.execute()

    def job_owner(self, job_id: str) -> str | None:
        raw = self.r.get(self._k("job", job_id, "owner"))
        return raw.decode() if raw is not None else None

    def recent_jobs(self, owner: str, n: int) -> list[str]:
        return [j.decode() for j in self.r.lrange(self._k("jobs", owner), 0, n - 1)]

    def acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        key = self._k("lease", name)
        if self.r.set(key, holder, nx=True, px=int(ttl_s * 1000)):
            return True
        if self.r.get(key) == holder.encode():
            self.r.pexpire(key, int(ttl_s * 1000))
            return True
        return False

    def release_lease(self, name: str, holder: str) -> None:
        key = self._k("lease", name)
        if self.r.get(key) == holder.encode():
            self.r.delete(key)

    def set_flag(self, name: str) -> None:
        self.r.set(self._k("flag", name), 1, ex=self.job_ttl_s)

    def has_flag(self, name: str) -> bool:
        return bool(self.r.exists(self._k("flag", name)))
