"""The one HTTP client setup: a pooled ``requests.Session`` with timeouts and retries.

Retries use exponential backoff with jitter on connection errors, 429 and 5xx (urllib3's
Retry honours Retry-After). Secrets travel as query parameters only inside requests; anything
printed or stored goes through ``redact`` first.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from mmiris import __version__

SECRET_PARAMS = ("apikey", "api_key", "key", "token", "access_token", "signature")
_SECRET_RE = re.compile(r"(?i)([?&](?:{})=)[^&#\s]*".format("|".join(SECRET_PARAMS)))
RETRY_STATUSES = (429, 500, 502, 503, 504)


@dataclass
class HttpConfig:
    timeout_s: float = 20.0  # read timeout; connect timeout is min(timeout_s, 10)
    retries: int = 5
    backoff_s: float = 0.5  # base of the exponential backoff
    backoff_jitter_s: float = 0.5
    pool_size: int = 16
    user_agent: str = f"mmiris/{__version__}"
    max_backoff_s: float = 30.0  # cap of one wait between attempts (Retry-After included)

    @classmethod
    def for_crawling(cls, timeout_s: float = 10.0) -> HttpConfig:
        """The crawlers' settings: a shorter timeout and backoff than an API client's, since
        the fetcher retries a request up to ``max_attempts`` times itself (crawl/fetcher.py)."""
        return cls(timeout_s=timeout_s, backoff_s=0.2, backoff_jitter_s=0.2, max_backoff_s=10.0)


def make_session(config: HttpConfig | None = None) -> requests.Session:
    config = config or HttpConfig()
    retry = Retry(
        total=config.retries,
        connect=config.retries,
        read=config.retries,
        status=config.retries,
        backoff_factor=config.backoff_s,
        backoff_jitter=config.backoff_jitter_s,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=("GET", "HEAD"),
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    adapter = HTTPAdapter(max_retries=retry, pool_connections=config.pool_size, pool_maxsize=config.pool_size)
    s = requests.Session()
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    s.headers["User-Agent"] = config.user_agent
    s.request_timeout = (min(config.timeout_s, 10.0), config.timeout_s)  # type: ignore[attr-defined]
    install_log_redaction()
    return s


def backoff_delay(attempt: int, config: HttpConfig, retry_after: str | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): exponential with jitter,
    at least a numeric Retry-After, never more than ``config.max_backoff_s``.

    For callers that retry themselves (e.g. on invalid bodies, which urllib3 cannot see)."""
    delay = config.backoff_s * (2**attempt) + random.uniform(0, config.backoff_jitter_s)
    if retry_after:
        try:
            delay = max(delay, float(retry_after))
        except ValueError:
            pass  # an HTTP date: fall back to our own backoff
    return min(delay, config.max_backoff_s)


class RedactingFilter(logging.Filter):
    """Redacts secret query parameters in log records (urllib3 logs request URLs at DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        elif record.args:
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


_REDACTING = RedactingFilter()


def install_log_redaction(
    names: tuple[str, ...] = ("urllib3.connectionpool", "urllib3.util.retry", "urllib3", "requests"),
) -> None:
    """Attach the redacting filter to the HTTP libraries' loggers (idempotent)."""
    for name in names:
        lg = logging.getLogger(name)
        if _REDACTING not in lg.filters:
            lg.addFilter(_REDACTING)


def redact(text: str) -> str:
    """Replace secret query parameter values (apikey=..., token=...) with '***'."""
    return _SECRET_RE.sub(r"\1***", str(text))
