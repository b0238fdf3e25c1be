"""The crawl's cache and daily quota on a backend every worker shares: the store's own
filesystem (moto S3 here) or Redis. A crawl killed in one process resumes in another, with
another working directory and home, without repeating a successful request."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from mmiris.artifacts import ArtifactStore
from mmiris.crawl.cache import ObjectStoreCache, ResponseCache, cache_location, open_cache
from mmiris.testing.crawl import publish_items, record, write_posters
from mmiris.testing.omdb_server import Catalogue, Faults, OmdbServer
from tests.test_crawl_resume import KEY, _ok_counts, _server_key, wait_for_quiet
from tests.test_store_s3 import s3  # noqa: F401 - the moto server fixture
from tests.waiting import PATIENCE_S, output_tail, wait_until

N = 40


def s3_uri(endpoint: str, path: str) -> str:
    return f"s3://mmiris/{path}?endpoint_override={endpoint}&scheme=http&region=us-east-1"


def test_cache_location_follows_the_store_and_the_setting(tmp_path, monkeypatch, s3):  # noqa: F811
    monkeypatch.delenv("MMIRIS_CRAWL_CACHE", raising=False)
    local = ArtifactStore(tmp_path / "store")
    assert cache_location(local, "omdb") == str(tmp_path / "store" / "_crawl_cache" / "omdb")
    remote = ArtifactStore(s3_uri(s3, "loc"))
    assert cache_location(remote, "omdb") == s3_uri(s3, "loc/_crawl_cache/omdb")
    assert isinstance(open_cache(cache_location(remote, "omdb")), ObjectStoreCache)
    assert isinstance(open_cache(cache_location(local, "omdb")), ResponseCache)
    monkeypatch.setenv("MMIRIS_CRAWL_CACHE", "redis://cache:6379/0")
    assert cache_location(remote, "images") == "redis://cache:6379/0#mmiris-crawl:images"
    assert cache_location(remote, "images", given=tmp_path / "c") == str(tmp_path / "c")


def test_object_store_cache_answers_and_quota_are_shared(s3):  # noqa: F811
    uri = s3_uri(s3, "cache-unit")
    a, b = ObjectStoreCache(uri), ObjectStoreCache(uri)  # two machines
    a.put("omdb?i=tt1", 200, b'{"Title": "x"}')
    hit = b.get("omdb?i=tt1")
    assert hit is not None and (hit.status, hit.body) == (200, b'{"Title": "x"}')
    assert b.get("omdb?i=tt2") is None and b.keys() == ["omdb?i=tt1"]
    assert [a.take_quota(3, day="2026-01-01") for _ in range(2)] == [True, True]
    assert b.take_quota(3, day="2026-01-01") is True
    assert a.take_quota(3, day="2026-01-01") is False and b.take_quota(3, day="2026-01-01") is False
    assert a.quota_used("2026-01-01") == 3 and b.quota_used("2026-01-02") == 0


@pytest.mark.timeout(3 * PATIENCE_S)  # waits are on the server's log and the store, not the clock
def test_crawl_killed_resumes_in_another_process_and_directory_on_s3(tmp_path, s3):  # noqa: F811
    posters = tmp_path / "posters"
    write_posters(posters)
    recs, items = [], []
    for i in range(N):
        recs.append(
            record(
                100 + i, f"Movie {i}", 1980 + i % 20, f"tt{2000000 + i:07d}", poster=f"posters/{(1, 2, 6)[i % 3]}.jpg"
            )
        )
        items.append({"item_id": i, "source_id": str(100 + i), "title": f"Movie {i} ({1980 + i % 20})"})
    store_uri = s3_uri(s3, "crawl-resume")
    faults = Faults(slow=1.0, slow_s=0.03, seed=5)
    with OmdbServer(Catalogue(recs, posters), {KEY}, faults=faults) as srv:
        store = ArtifactStore(store_uri)
        ref = publish_items(store, items)
        env = {
            **os.environ,
            "OMDB_API_KEY": KEY,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PYTHONPATH": os.getcwd(),
        }
        env.pop("MMIRIS_CRAWL_CACHE", None)
        cmd = [
            sys.executable,
            "-c",
            "import sys; from mmiris.cli import main; sys.exit(main(sys.argv[1:]))",
            "--store",
            store_uri,
            "crawl",
            "omdb",
            "--items",
            str(ref),
            "--base-url",
            srv.url,
            "--workers",
            "0",
            "--threads",
            "2",
            "--rate",
            "0",
        ]
        first, second = tmp_path / "machine-a", tmp_path / "machine-b"
        for d in (first, second):
            (d / "home").mkdir(parents=True)
        log = tmp_path / "first.log"  # a file, not a pipe nobody reads while the crawl runs
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, cwd=first, env={**env, "HOME": str(first / "home")}, stdout=out, stderr=out)
        try:
            wait_until(lambda: srv.log.stats()["requests"] >= N // 2, "half the requests", proc=proc, log=log)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == -signal.SIGKILL, output_tail(proc, log)
        assert "item_text" not in store.names()
        wait_for_quiet(srv)

        cache = ObjectStoreCache(s3_uri(s3, "crawl-resume/_crawl_cache/omdb"))
        cached_at_kill = {_server_key(k) for k in cache.keys()}
        assert cached_at_kill
        assert not list((first / "home").rglob("*.sqlite")) and not list(first.rglob("_crawl_cache"))
        before = _ok_counts(srv)

        done = subprocess.run(
            cmd, cwd=second, env={**env, "HOME": str(second / "home")}, capture_output=True, timeout=PATIENCE_S
        )
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        after = _ok_counts(srv)
        asked_again = {k for k in after if after[k] > before.get(k, 0) and before.get(k, 0) > 0}
        assert not (asked_again & cached_at_kill)  # nothing stored was requested again
        assert srv.log.stats()["successful_requests_repeated"] <= 2  # at most the 2 in flight at the kill
        assert store.read_table(store.latest("item_text")).num_rows == N


_OPEN_TOGETHER = """
import sys, time
from mmiris.crawl.cache import ResponseCache
folder, i, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
time.sleep(max(0.0, start - time.time()))  # every process opens the new file at once
cache = ResponseCache(folder)
cache.put("k" + i, 200, b"x")
cache.take_quota(None, day="2026-01-01")
"""


def test_processes_opening_a_new_sqlite_cache_together_all_succeed(tmp_path):
    """Switching a new file to WAL takes an exclusive lock that SQLite's busy handler does not
    wait for: before the retry, 8 processes opening one new cache together failed with
    "database is locked" in 6 of 15 rounds (the crawl's worker processes did so in CI)."""
    import time

    for r in range(8):
        folder, n, start = str(tmp_path / f"c{r}"), 8, time.time() + 0.5
        procs = [
            subprocess.Popen([sys.executable, "-c", _OPEN_TOGETHER, folder, str(i), str(start)], stderr=subprocess.PIPE)
            for i in range(n)
        ]
        errs = [p.communicate(timeout=PATIENCE_S)[1].decode() for p in procs]
        failed = [err for p, err in zip(procs, errs) if p.returncode != 0]
        assert not failed, failed[0]
        cache = ResponseCache(folder)
        assert len(cache) == n and cache.quota_used("2026-01-01") == n
