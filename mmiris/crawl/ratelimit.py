"""Rate limiting shared by the crawl's Dask workers, and the daily quota.

How the global rate is shared: the driver splits ``rate_per_s`` evenly between the worker
*processes* of the cluster (``process_share``); each process runs one thread-safe
``RateLimiter`` (a GCRA / virtual-scheduling token bucket) that all its threads and tasks
take from (``process_limiter``). The processes' shares add up to the global rate, so the
cluster never exceeds it, with no coordination per request (a distributed Semaphore or
Variable would cost a scheduler round trip for every request). The price: a process that
idles leaves its share unused. With ``LocalCluster(processes=False)`` (the stage's default)
or the thread executor there is one process and one bucket holding the whole rate.

The daily quota is counted by the response cache's backend (``take_quota`` of
``mmiris.crawl.cache``: SQLite, the store's filesystem or Redis), per UTC day, across
processes, machines and runs; see ``DailyQuota``.
"""

from __future__ import annotations

import os
import socket
import threading
import time

from mmiris.crawl.cache import Cache


class QuotaExhausted(Exception):
    """The daily quota of requests is spent (ours, or the API's 'Request limit reached!')."""


class RateLimiter:
    """At most ``rate_per_s`` acquisitions per second, bursts of at most ``burst``.

    ``rate_per_s`` of 0 or None means unlimited."""

    def __init__(self, rate_per_s: float | None, burst: float = 1.0):
        self.rate = float(rate_per_s or 0.0)
        self.interval = 1.0 / self.rate if self.rate > 0 else 0.0
        self.tolerance = max(0.0, burst - 1.0) * self.interval
        self._tat = time.monotonic()  # theoretical arrival time of the next request
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Block until a request may be sent; returns the seconds waited."""
        if self.interval == 0.0:
            return 0.0
        with self._lock:
            now = time.monotonic()
            tat = max(self._tat, now)
            wait = max(0.0, tat - self.tolerance - now)
            self._tat = tat + self.interval
        if wait > 0:
            time.sleep(wait)
        return wait


_LIMITERS: dict[str, RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def process_limiter(name: str, rate_per_s: float | None) -> RateLimiter:
    """The one limiter of this process for ``name`` (a crawl run), created on first use."""
    with _LIMITERS_LOCK:
        lim = _LIMITERS.get(name)
        if lim is None or lim.rate != float(rate_per_s or 0.0):
            lim = _LIMITERS[name] = RateLimiter(rate_per_s)
        return lim


def release_limiter(name: str) -> None:
    with _LIMITERS_LOCK:
        _LIMITERS.pop(name, None)


def process_identity() -> tuple[str, int]:
    return socket.gethostname(), os.getpid()


def process_share(rate_per_s: float | None, client=None) -> float | None:
    """This run's per-process rate: the global rate over the cluster's worker processes."""
    if not rate_per_s or client is None:
        return rate_per_s
    procs = set(client.run(process_identity).values())
    return rate_per_s / max(1, len(procs))


class DailyQuota:
    """``quota.take()`` before each request sent; raises QuotaExhausted when spent."""

    def __init__(self, cache: Cache, limit: int | None):
        self.cache, self.limit = cache, limit

    def take(self) -> None:
        if not self.cache.take_quota(self.limit):
            raise QuotaExhausted(
                f"daily quota of {self.limit} requests spent (UTC day); re-run tomorrow to continue from the cache"
            )

    def used_today(self) -> int:
        return self.cache.quota_used()
