"""The persistent response cache and daily quota of the crawlers, on a backend every worker shares.

Every answer that settles a request (an OMDb record, OMDb's "Movie not found!", a poster's
bytes, a definitive 404) is stored under its request key *before* the crawler acts on it, so
a re-run after a crash, a kill or a quota stop sends no request again that already
succeeded. Keys never contain the API key: they are built from the request's own parameters
(see ``mmiris.crawl.fetcher.request_key``). Failures (5xx, 429, timeouts, broken bodies,
quota messages) are never stored. The same backend counts requests sent per UTC day for the
daily quota (``take_quota``), so the quota holds across processes, machines and runs.

:func:`open_cache` picks the backend from a location:

- a local folder: :class:`ResponseCache`, one SQLite file (WAL mode). SQLite serialises
  writers; the worker processes of one machine share it safely. Not for NFS.
- a filesystem URI (``s3://bucket/store/_crawl_cache/omdb?endpoint_override=…``, any
  pyarrow filesystem): :class:`ObjectStoreCache`, one object per answer and one claim object
  per request counted against the quota. A crawl killed on one machine resumes on another
  that sees the same bucket. This is the default for a store on S3
  (:func:`cache_location`: ``<store>/_crawl_cache/<crawl>``).
- ``redis://host:6379/0`` (``#prefix`` optional): :class:`RedisCache` (extra
  ``mmiris[redis]``), hashes per answer and an INCR counter per day.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Protocol

CACHE_ENV = "MMIRIS_CRAWL_CACHE"  # a folder, filesystem URI or redis:// URL for every crawl's cache

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key        TEXT PRIMARY KEY,
    status     INTEGER NOT NULL,
    body       BLOB NOT NULL,
    fetched_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS quota (
    day  TEXT PRIMARY KEY,
    sent INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class CachedResponse:
    status: int
    body: bytes
    fetched_at: float


def utc_day() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d")


class Cache(Protocol):
    """What the crawlers need of a cache backend."""

    def get(self, key: str) -> CachedResponse | None: ...
    def put(self, key: str, status: int, body: bytes) -> None: ...
    def keys(self) -> list[str]: ...
    def take_quota(self, limit: int | None, day: str | None = None) -> bool: ...
    def quota_used(self, day: str | None = None) -> int: ...
    def close(self) -> None: ...


def is_uri(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def open_cache(location: str | os.PathLike) -> Cache:
    """The backend for ``location`` (module docstring): a folder, a filesystem URI or redis://."""
    loc = str(location)
    if _is_redis(loc):
        return RedisCache(loc)
    if is_uri(loc):
        return ObjectStoreCache(loc)
    return ResponseCache(loc.removeprefix("file://"))


def _is_redis(location: str) -> bool:
    return location.startswith(("redis://", "rediss://", "unix://"))


def cache_location(store, sub: str, given: str | os.PathLike | None = None) -> str:
    """Where a crawl keeps its cache: ``given`` as is; else ``$MMIRIS_CRAWL_CACHE`` + ``sub``;
    else next to the artifacts on the store's own filesystem (``<store>/_crawl_cache/<sub>``),
    which every machine that reads the store shares."""
    if given:
        loc = str(given)
        return loc if is_uri(loc) or _is_redis(loc) else str(Path(loc).expanduser())
    base = os.environ.get(CACHE_ENV)
    if base and _is_redis(base):
        url, _, prefix = base.partition("#")
        return f"{url}#{prefix or 'mmiris-crawl'}:{sub}"
    if base:
        return _join_uri(base, sub) if is_uri(base) else str(Path(base).expanduser() / sub)
    if store.is_local:
        return str(Path(store.root) / "_crawl_cache" / sub)
    return _join_uri(store.uri, f"_crawl_cache/{sub}")


def _join_uri(uri: str, path: str) -> str:
    """``s3://b/p?x=1`` + ``q`` -> ``s3://b/p/q?x=1`` (the query keeps the filesystem options)."""
    base, sep, query = uri.partition("?")
    return f"{base.rstrip('/')}/{path}{sep}{query}"


def _use_wal(conn: sqlite3.Connection, timeout_s: float) -> None:
    """Put the file in WAL mode (persistent: later connections find it set).

    Switching the journal mode takes an exclusive lock and SQLite answers "database is locked"
    at once, without its busy handler, when processes open a new file together (measured: 6 of
    15 rounds of 8 processes). So the switch is retried until ``timeout_s``, as the busy
    handler does for every other statement."""
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")  # a filesystem without WAL keeps its mode
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e):
                raise
            if time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


class ResponseCache:
    """``cache.get(key)``, ``cache.put(key, status, body)``; thread- and process-safe."""

    FILE = "responses.sqlite"
    TIMEOUT_S = 60.0  # how long a connection waits for another process's lock

    def __init__(self, cache_dir: str | Path):
        self.dir = Path(cache_dir).expanduser()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / self.FILE
        self._local = threading.local()
        with self._conn() as c:
            c.executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.TIMEOUT_S, isolation_level=None, check_same_thread=False)
            _use_wal(conn, self.TIMEOUT_S)
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives process kills
            self._local.conn = conn
        return conn

    def get(self, key: str) -> CachedResponse | None:
        row = self._conn().execute("SELECT status, body, fetched_at FROM responses WHERE key = ?", (key,)).fetchone()
        return CachedResponse(row[0], bytes(row[1]), row[2]) if row else None

    def put(self, key: str, status: int, body: bytes) -> None:
        self._conn().execute(
            "INSERT OR REPLACE INTO responses (key, status, body, fetched_at) VALUES (?, ?, ?, ?)",
            (key, status, sqlite3.Binary(body), time.time()),
        )

    def __len__(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def keys(self) -> list[str]:
        return [r[0] for r in self._conn().execute("SELECT key FROM responses ORDER BY key")]

    # ------------------------------------------------------------ daily quota
    def take_quota(self, limit: int | None, day: str | None = None) -> bool:
        """Count one request against today's quota; False (and no count) when it is spent."""
        day = day or utc_day()
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT sent FROM quota WHERE day = ?", (day,)).fetchone()
            sent = row[0] if row else 0
            if limit is not None and sent >= limit:
                conn.execute("COMMIT")
                return False
            conn.execute(
                "INSERT INTO quota (day, sent) VALUES (?, 1) ON CONFLICT(day) DO UPDATE SET sent = sent + 1", (day,)
            )
            conn.execute("COMMIT")
            return True
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def quota_used(self, day: str | None = None) -> int:
        row = self._conn().execute("SELECT sent FROM quota WHERE day = ?", (day or utc_day(),)).fetchone()
        return row[0] if row else 0

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class ObjectStoreCache:
    """The cache as objects on a pyarrow filesystem (S3, GCS, a mounted folder):

    ``<root>/responses/<h[:2]>/<h>``: one object per answer (``h`` = sha256 of the key), a
    JSON header line (key, status, fetched_at) and the body. A single PUT is atomic on object
    stores, so a reader sees a whole answer or none.
    ``<root>/quota/<day>/<claim>``: one empty object per request counted against the day's
    quota. A sender writes its claim first, then counts the day's claims; over the limit, it
    removes its claim and does not send. Two senders racing at the limit can both step back
    (a request left unsent), never both send past it.
    """

    def __init__(self, uri: str):
        import pyarrow.fs as pafs

        self.uri = uri
        self.fs, root = pafs.FileSystem.from_uri(uri)
        self.root = root.rstrip("/")
        self._counted: dict[str, int] = {}

    def _path(self, key: str) -> str:
        h = hashlib.sha256(key.encode()).hexdigest()
        return f"{self.root}/responses/{h[:2]}/{h}"

    def get(self, key: str) -> CachedResponse | None:
        try:
            with self.fs.open_input_stream(self._path(key)) as f:
                data = f.read()
        except (FileNotFoundError, OSError):
            return None
        head, _, body = data.partition(b"\n")
        meta = json.loads(head)
        if meta.get("key") != key:  # a sha256 collision: never in practice, but never wrong
            return None
        return CachedResponse(int(meta["status"]), body, float(meta["fetched_at"]))

    def put(self, key: str, status: int, body: bytes) -> None:
        head = json.dumps({"key": key, "status": status, "fetched_at": time.time()}).encode()
        with self.fs.open_output_stream(self._path(key)) as f:
            f.write(head + b"\n" + body)

    def _files(self, prefix: str) -> list:
        import pyarrow.fs as pafs

        sel = pafs.FileSelector(f"{self.root}/{prefix}", recursive=True, allow_not_found=True)
        return [i for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File]

    def keys(self) -> list[str]:
        out = []
        for info in self._files("responses"):
            with self.fs.open_input_stream(info.path) as f:
                out.append(json.loads(f.read().partition(b"\n")[0])["key"])
        return sorted(out)

    def __len__(self) -> int:
        return len(self._files("responses"))

    def take_quota(self, limit: int | None, day: str | None = None) -> bool:
        day = day or utc_day()
        claim = f"{self.root}/quota/{day}/{os.getpid()}-{uuid.uuid4().hex}"
        with self.fs.open_output_stream(claim) as f:
            f.write(b"")
        if limit is None:
            return True
        if self.quota_used(day) > limit:
            self.fs.delete_file(claim)
            return False
        return True

    def quota_used(self, day: str | None = None) -> int:
        return len(self._files(f"quota/{day or utc_day()}"))

    def close(self) -> None:
        pass


class RedisCache:
    """The cache in Redis: ``<prefix>:r:<key>`` hashes (status, body, fetched_at) and one
    counter ``<prefix>:quota:<day>`` per UTC day (INCR; over the limit, DECR and refuse),
    kept three days. ``redis://host:6379/0#prefix`` (default prefix ``mmiris-crawl``)."""

    def __init__(self, url: str):
        import redis

        base, _, prefix = url.partition("#")
        self.url = url
        self.prefix = prefix or "mmiris-crawl"
        self.r = redis.Redis.from_url(base)

    def get(self, key: str) -> CachedResponse | None:
        row = self.r.hgetall(f"{self.prefix}:r:{key}")
        if not row:
            return None
        body: bytes = row[b"body"]  # type: ignore[assignment]
        return CachedResponse(int(row[b"status"]), body, float(row[b"fetched_at"]))

    def put(self, key: str, status: int, body: bytes) -> None:
        self.r.hset(
            f"{self.prefix}:r:{key}", mapping={"status": str(status), "body": body, "fetched_at": repr(time.time())}
        )

    def keys(self) -> list[str]:
        skip = len(f"{self.prefix}:r:")
        return sorted(k.decode()[skip:] for k in self.r.scan_iter(match=f"{self.prefix}:r:*"))

    def __len__(self) -> int:
        return len(self.keys())

    def take_quota(self, limit: int | None, day: str | None = None) -> bool:
        name = f"{self.prefix}:quota:{day or utc_day()}"
        n = int(self.r.incr(name))
        if n == 1:
            self.r.expire(name, timedelta(days=3))
        if limit is not None and n > limit:
            self.r.decr(name)
            return False
        return True

    def quota_used(self, day: str | None = None) -> int:
        value = self.r.get(f"{self.prefix}:quota:{day or utc_day()}")
        return int(value) if value else 0

    def close(self) -> None:
        self.r.close()
