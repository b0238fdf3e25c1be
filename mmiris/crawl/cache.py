"""The persistent response cache of the crawlers (one SQLite file, WAL mode).

Every answer that settles a request (an OMDb record, OMDb's "Movie not found!", a poster's
bytes, a definitive 404) is stored under its request key *before* the crawler acts on it, so
a re-run after a crash, a kill or a quota stop sends no request again that already
succeeded. Keys never contain the API key: they are built from the request's own parameters
(see ``mmiris.crawl.fetcher.request_key``). Failures (5xx, 429, timeouts, broken bodies,
quota messages) are never stored.

The same file counts requests sent per UTC day for the daily quota (``take_quota``), so
the quota holds across processes and runs on one machine. SQLite serialises writers; all
Dask workers of a ``LocalCluster`` share the file safely. Workers on several hosts need the
crawl's cache on a disk local to one of them (SQLite over NFS is not safe): run the crawl on
one host, which its I/O-bound work allows.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

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


class ResponseCache:
    """``cache.get(key)``, ``cache.put(key, status, body)``; thread- and process-safe."""

    FILE = "responses.sqlite"

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
            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
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
