"""Rate limiter, per-process share of the global rate, daily quota, response cache, backoff."""

import logging
import threading
import time

import pytest

from mmiris.crawl.cache import ResponseCache
from mmiris.crawl.ratelimit import DailyQuota, QuotaExhausted, RateLimiter, process_share
from mmiris.http import HttpConfig, backoff_delay, make_session


def test_rate_limiter_holds_the_rate_across_threads():
    lim = RateLimiter(50.0)
    t0 = time.perf_counter()

    def work():
        for _ in range(10):
            lim.acquire()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    assert 39 / 50 - 0.02 <= elapsed < 1.6  # 40 acquisitions, the first is free
    t0 = time.perf_counter()
    unlimited = RateLimiter(None)
    for _ in range(1000):
        unlimited.acquire()
    assert time.perf_counter() - t0 < 0.5


def test_process_share_splits_the_rate_between_worker_processes():
    class Cluster:  # what dask.distributed's Client.run returns: worker -> result
        def __init__(self, idents):
            self.idents = idents

        def run(self, fn):
            return {f"w{i}": ident for i, ident in enumerate(self.idents)}

    assert process_share(10.0, None) == 10.0
    assert process_share(10.0, Cluster([("h", 1), ("h", 1)])) == 10.0  # threads of one process
    assert process_share(10.0, Cluster([("h", 1), ("h", 2), ("g", 1), ("g", 2)])) == 2.5
    assert process_share(None, Cluster([("h", 1), ("h", 2)])) is None


def test_cache_persists_and_quota_is_exact_across_threads(tmp_path):
    c = ResponseCache(tmp_path)
    assert c.get("k") is None
    c.put("k", 200, b"\x00body")
    again = ResponseCache(tmp_path)
    assert again.get("k").body == b"\x00body" and again.get("k").status == 200 and len(again) == 1
    granted = []

    def take():
        for _ in range(40):
            granted.append(again.take_quota(100, day="2026-01-01"))

    threads = [threading.Thread(target=take) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 100 and again.quota_used("2026-01-01") == 100
    assert c.quota_used("2026-01-02") == 0
    q = DailyQuota(c, 2)
    q.take()
    q.take()
    with pytest.raises(QuotaExhausted):
        q.take()
    assert q.used_today() == 2


def test_backoff_and_log_redaction(caplog):
    cfg = HttpConfig(backoff_s=0.1, backoff_jitter_s=0.0, max_backoff_s=1.0)
    assert backoff_delay(0, cfg) == pytest.approx(0.1) and backoff_delay(2, cfg) == pytest.approx(0.4)
    assert backoff_delay(10, cfg) == 1.0
    assert backoff_delay(0, cfg, retry_after="0.5") == pytest.approx(0.5)
    assert backoff_delay(0, cfg, retry_after="Wed, 21 Oct 2015 07:28:00 GMT") == pytest.approx(0.1)
    make_session()  # installs the redacting filter on urllib3's loggers
    caplog.set_level(logging.DEBUG)
    logging.getLogger("urllib3.connectionpool").debug('%s "GET %s"', "http://h", "/?i=1&apikey=s3cr3t")
    assert "apikey=***" in caplog.text and "s3cr3t" not in caplog.text
