"""SIGKILL a real crawl (a `mmiris crawl omdb` subprocess on Dask) halfway, restart it, and
get the same artifacts as an uninterrupted run, without repeating any request whose answer was
already stored."""

import os
import signal
import subprocess
import sys
from urllib.parse import urlsplit

import pytest

from mmiris.artifacts import ArtifactStore
from mmiris.crawl.cache import ResponseCache
from mmiris.http import HttpConfig
from mmiris.pipelines.crawl import crawl_omdb
from mmiris.testing.crawl import publish_items, record, write_posters
from mmiris.testing.omdb_server import Catalogue, Faults, OmdbServer
from tests.waiting import PATIENCE_S, output_tail, wait_until

KEY = "resume-test-key-77"
N = 48


def _server_key(cache_key: str) -> str:
    if cache_key.startswith("omdb?"):
        return "/?" + cache_key[len("omdb?") :]
    parts = urlsplit(cache_key)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _ok_counts(srv) -> dict:
    return {k: v.get("ok", 0) for k, v in srv.log.per_key().items()}


def wait_for_quiet(srv) -> None:
    """Until the server has answered what a killed client had already sent."""
    wait_until(lambda: not srv.busy(), "the server answering the killed crawl's last requests", settle_s=1.0)


# Waits are on what the server and the store show, never on the clock; the overall limit is
# generous, as every step is many times slower on a loaded machine.
@pytest.mark.timeout(3 * PATIENCE_S)
def test_sigkill_halfway_then_restart_gives_the_same_artifacts(tmp_path):
    posters = tmp_path / "posters"
    write_posters(posters)
    recs, items = [], []
    for i in range(N):
        recs.append(
            record(
                100 + i,
                f"Movie Number {i}",
                1980 + i % 20,
                f"tt{1000000 + i:07d}",
                poster=f"posters/{(1, 2, 6, 7, 8)[i % 5]}.jpg",
            )
        )
        items.append(
            {
                "item_id": i,
                "source_id": str(100 + i),
                "title": f"Movie Number {i} ({1980 + i % 20})",
                "year": 1980 + i % 20,
                "imdb_id": f"tt{1000000 + i:07d}" if i % 2 else None,
            }
        )
    # The read timeout (3 s) is far above an answer's time on a loaded machine, so a correct
    # answer is never given up on and asked again; a hang (4 s) is longer than it.
    faults = Faults(http_5xx=0.1, timeout=0.03, invalid_json=0.03, slow=1.0, slow_s=0.03, hang_s=4.0, seed=11)
    with OmdbServer(Catalogue(recs, posters), {KEY}, faults=faults) as srv:
        clean_store = ArtifactStore(tmp_path / "clean")
        clean = crawl_omdb(
            clean_store,
            publish_items(clean_store, items),
            base_url=srv.url,
            api_key=KEY,
            cache_dir=tmp_path / "clean-cache",
            workers=0,
            rate_per_s=None,
            http=HttpConfig(timeout_s=3.0, backoff_s=0.01, backoff_jitter_s=0.01),
        )
        total = srv.log.stats()["requests"]
        srv.log.reset()

        store = ArtifactStore(tmp_path / "store")
        ref = publish_items(store, items)
        cache = tmp_path / "cache"
        cmd = [
            sys.executable,
            "-c",
            "import sys; from mmiris.cli import main; sys.exit(main(sys.argv[1:]))",
            "--store",
            str(tmp_path / "store"),
            "crawl",
            "omdb",
            "--items",
            str(ref),
            "--base-url",
            srv.url,
            "--cache-dir",
            str(cache),
            "--workers",
            "1",
            "--threads",
            "2",
            "--rate",
            "0",
            "--timeout",
            "3.0",
        ]
        env = {**os.environ, "OMDB_API_KEY": KEY, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        log = tmp_path / "first.log"  # a file, not a pipe nobody reads while the crawl runs
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: srv.log.stats()["requests"] >= total // 2, "half the requests", proc=proc, log=log)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == -signal.SIGKILL, output_tail(proc, log)
        assert "item_text" not in store.names() and "item_images" not in store.names()

        wait_for_quiet(srv)
        cached_at_kill = {_server_key(k) for k in ResponseCache(cache).keys()}
        before = _ok_counts(srv)
        assert 0 < len(cached_at_kill) < len(clean_store.read_table(clean.item_text)) * 3

        done = subprocess.run(cmd, env=env, capture_output=True, timeout=PATIENCE_S)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        after = _ok_counts(srv)
        asked_again = {k for k in after if after[k] > before.get(k, 0) and before.get(k, 0) > 0}
        assert not (asked_again & cached_at_kill)  # nothing stored was requested again
        # Only answers the killed process never stored can repeat: at most one per thread.
        assert srv.log.stats()["successful_requests_repeated"] <= 2

        res_text = store.read_table(store.latest("item_text")).to_pylist()
        res_images = store.read_table(store.latest("item_images")).to_pylist()
        assert res_text == clean_store.read_table(clean.item_text).to_pylist()
        assert res_images == clean_store.read_table(clean.item_images).to_pylist()
        # Same items, same parameters: the same version ids as the uninterrupted run.
        assert store.latest("item_text") == clean.item_text
        assert store.latest("item_images") == clean.item_images
