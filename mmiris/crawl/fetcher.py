"""One request, done right: cache, quota, rate limit, retries, secrets kept out of sight.

``Fetcher.fetch`` is the only place the crawlers send HTTP. For each request it

1. answers from the response cache when the key is there (nothing sent);
2. otherwise, per attempt: checks the run's stop flag, counts one request against the daily
   quota (API requests only, not image downloads), waits for the rate limiter, sends through the session of ``mmiris.http.make_session``
   (pooled, with timeouts; retries are done here rather than in urllib3 so that every attempt
   passes the rate limiter and the quota, and so that broken bodies — truncated, invalid JSON,
   which urllib3 cannot see — are retried too);
3. asks the caller's ``classify`` what the answer is: ``OK`` (stored, then returned),
   ``RETRY`` (backoff with jitter, ``Retry-After`` honoured), or an exception that stops the
   run (quota, invalid key, misconfiguration).

Connection errors, timeouts and incomplete bodies are retried the same way. After
``max_attempts`` the request fails with ``FetchFailed``; the item is then left for the next
run. Secrets go in ``secret_params`` as ``ApiKey`` values: they are revealed only into the
outgoing request, never into keys, messages or logs (messages pass through ``redact``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlencode

import requests

from mmiris.crawl.apikey import ApiKey
from mmiris.crawl.cache import open_cache
from mmiris.crawl.ratelimit import DailyQuota, process_limiter, release_limiter
from mmiris.http import RETRY_STATUSES, HttpConfig, backoff_delay, make_session, redact

log = logging.getLogger("mmiris.crawl")

OK = "ok"
RETRY = "retry"


class Stopped(Exception):
    """The run was stopped (request limit, invalid key) while this request waited."""


class FetchFailed(Exception):
    """A request still failed after every attempt (transient errors only)."""


class InvalidApiKey(Exception):
    """The API rejected the key: stop at once."""


class BadResponse(Exception):
    """An answer that no retry can fix (e.g. HTTP 404 from the API's base URL)."""


@dataclass
class FetchSettings:
    """Everything a worker needs to fetch (picklable; the key is not in here)."""

    run_id: str
    cache_dir: str
    rate_per_s: float | None = None  # this process's share of the global rate
    daily_quota: int | None = None
    http: HttpConfig = field(default_factory=HttpConfig.for_crawling)
    max_attempts: int = 10


@dataclass
class Counters:
    sent: int = 0
    cache_hits: int = 0
    retries: int = 0
    failed: int = 0
    waited_s: float = 0.0
    by_problem: dict = field(default_factory=dict)

    def add(self, other: Counters) -> None:
        self.sent += other.sent
        self.cache_hits += other.cache_hits
        self.retries += other.retries
        self.failed += other.failed
        self.waited_s += other.waited_s
        for k, v in other.by_problem.items():
            self.by_problem[k] = self.by_problem.get(k, 0) + v

    def problem(self, what: str) -> None:
        self.by_problem[what] = self.by_problem.get(what, 0) + 1

    def as_dict(self) -> dict:
        return {
            "requests_sent": self.sent,
            "cache_hits": self.cache_hits,
            "retries": self.retries,
            "failed_requests": self.failed,
            "rate_limit_wait_s": round(self.waited_s, 3),
            "retry_causes": dict(sorted(self.by_problem.items())),
        }


@dataclass(frozen=True)
class Fetched:
    status: int
    body: bytes
    cached: bool


def request_key(url: str, params: Mapping[str, str] | None = None) -> str:
    """A cache/log key for a request: the URL and its sorted parameters, secrets redacted."""
    q = urlencode(sorted((params or {}).items()))
    return redact(url + ("?" + q if q else ""))


# ------------------------------------------------------------------ stop flags
_STOPS: dict[str, str] = {}


def signal_stop(run_id: str, reason: str) -> None:
    """Ask every task of ``run_id`` in this process to stop before its next request."""
    _STOPS.setdefault(run_id, reason)


def stop_reason(run_id: str) -> str | None:
    return _STOPS.get(run_id)


def clear_stop(run_id: str) -> None:
    _STOPS.pop(run_id, None)


class Fetcher:
    def __init__(self, settings: FetchSettings):
        self.settings = settings
        self.session = make_session(replace(settings.http, retries=0))
        self.timeout = self.session.request_timeout  # type: ignore[attr-defined]
        self.cache = open_cache(settings.cache_dir)  # a folder, filesystem URI or redis:// URL
        self.quota = DailyQuota(self.cache, settings.daily_quota)
        self.limiter = process_limiter(settings.run_id, settings.rate_per_s)
        self._key_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def _key_lock(self, key: str) -> threading.Lock:
        # Two tasks of this process asking the same thing at once: the second waits and then
        # finds the answer in the cache, so it is not sent twice.
        with self._locks_lock:
            lock = self._key_locks.get(key)
            if lock is None:
                lock = self._key_locks[key] = threading.Lock()
            return lock

    def fetch(
        self,
        url: str,
        params: Mapping[str, str] | None = None,
        *,
        classify: Callable[[int, bytes], str],
        counters: Counters,
        secret_params: Mapping[str, ApiKey] | None = None,
        key: str | None = None,
        what: str = "request",
        count_quota: bool = True,
    ) -> Fetched:
        key = key or request_key(url, params)
        with self._key_lock(key):
            hit = self.cache.get(key)
            if hit is not None:
                counters.cache_hits += 1
                return Fetched(hit.status, hit.body, cached=True)
            return self._send(url, params, key, classify, counters, secret_params, what, count_quota)

    def _send(self, url, params, key, classify, counters, secret_params, what, count_quota) -> Fetched:
        s = self.settings
        sent_params = dict(params or {})
        for name, secret in (secret_params or {}).items():
            sent_params[name] = secret.reveal()
        last = "no attempt"
        for attempt in range(s.max_attempts):
            reason = stop_reason(s.run_id)
            if reason:
                raise Stopped(reason)
            if count_quota:
                self.quota.take()
            counters.waited_s += self.limiter.acquire()
            counters.sent += 1
            retry_after = None
            try:
                r = self.session.get(url, params=sent_params, timeout=self.timeout)
                body = r.content  # reads the whole body: truncation raises here
                status = r.status_code
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
            ) as exc:
                last = _describe(exc)
                problem = "timeout" if isinstance(exc, requests.Timeout) else "connection"
            except requests.RequestException as exc:  # a bad URL and the like: not retryable
                raise BadResponse(f"{what} {key}: {_describe(exc)}") from None
            else:
                if status in RETRY_STATUSES:
                    retry_after = r.headers.get("Retry-After")
                    last, problem = f"HTTP {status}", f"http_{status}"
                else:
                    verdict = classify(status, body)
                    if verdict == OK:
                        self.cache.put(key, status, body)
                        return Fetched(status, body, cached=False)
                    last, problem = f"HTTP {status}: unusable body ({len(body)} bytes)", "bad_body"
            counters.problem(problem)
            if attempt + 1 < s.max_attempts:
                counters.retries += 1
                delay = backoff_delay(attempt, s.http, retry_after)
                log.debug("%s %s: %s; retry %d in %.2fs", what, key, last, attempt + 1, delay)
                time.sleep(delay)
        counters.failed += 1
        raise FetchFailed(f"{what} {key}: gave up after {s.max_attempts} attempts ({last})")


def _describe(exc: Exception) -> str:
    """An exception as a short line without secrets (requests puts URLs in messages)."""
    text = redact(str(exc))
    return f"{type(exc).__name__}: {text[:200]}"


_FETCHERS: dict[str, Fetcher] = {}
_FETCHERS_LOCK = threading.Lock()


def process_fetcher(settings: FetchSettings) -> Fetcher:
    """The fetcher of this process for a run (one session and connection pool per process)."""
    with _FETCHERS_LOCK:
        f = _FETCHERS.get(settings.run_id)
        if f is None:
            f = _FETCHERS[settings.run_id] = Fetcher(settings)
        return f


def release_fetcher(run_id: str) -> None:
    with _FETCHERS_LOCK:
        f = _FETCHERS.pop(run_id, None)
    release_limiter(run_id)
    if f is not None:
        f.session.close()
