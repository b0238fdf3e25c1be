"""The one HTTP client setup: a pooled ``requests.Session`` with timeouts and retries.

Retries use exponential backoff with jitter on connection errors, 429 and 5xx (urllib3's
Retry honours Retry-After). Secrets travel as query parameters only inside requests; anything
printed or stored goes through ``redact`` first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from mmiris import __version__

SECRET_PARAMS = ("apikey", "api_key", "key", "token", "access_token", "signature")
_SECRET_RE = re.compile(r"(?i)([?&](?:%s)=)[^&#\s]*" % "|".join(SECRET_PARAMS))


@dataclass
class HttpConfig:
    timeout_s: float = 20.0  # read timeout; connect timeout is min(timeout_s, 10)
    retries: int = 5
    backoff_s: float = 0.5  # base of the exponential backoff
    backoff_jitter_s: float = 0.5
    pool_size: int = 16
    user_agent: str = f"mmiris/{__version__}"


def make_session(config: HttpConfig | None = None) -> requests.Session:
    config = config or HttpConfig()
    retry = Retry(
        total=config.retries, connect=config.retries, read=config.retries, status=config.retries,
        backoff_factor=config.backoff_s, backoff_jitter=config.backoff_jitter_s,
        status_forcelist=(429, 500, 502, 503, 504), allowed_methods=("GET", "HEAD"),
        respect_retry_after_header=True, raise_on_status=False,
    )
    adapter = HTTPAdapter(max_retries=retry, pool_connections=config.pool_size,
                          pool_maxsize=config.pool_size)
    s = requests.Session()
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    s.headers["User-Agent"] = config.user_agent
    s.request_timeout = (min(config.timeout_s, 10.0), config.timeout_s)  # type: ignore[attr-defined]
    return s


def redact(text: str) -> str:
    """Replace secret query parameter values (apikey=..., token=...) with '***'."""
    return _SECRET_RE.sub(r"\1***", str(text))
