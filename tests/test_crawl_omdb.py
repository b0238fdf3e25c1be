"""The OMDb crawl end to end over real HTTP against the local OMDb-compatible server."""

import json
import logging
import os
import signal
import time

import pytest

from mmiris.artifacts import ArtifactStore
from mmiris.crawl.apikey import ApiKey, resolve_api_key
from mmiris.errors import MmirisError
from mmiris.http import HttpConfig
from mmiris.pipelines.crawl import CrawlIncomplete, CrawlStopped, crawl_omdb
from mmiris.testing.crawl import publish_items, record, write_posters
from mmiris.testing.omdb_server import Catalogue, Faults, OmdbServer

KEY = "omdb-test-KEY-5c1e9b"
# A read timeout well above a loaded 2-core machine's answer time: a correct answer that came
# too late would be retried, and counted as a repeated success.
FAST = HttpConfig(timeout_s=1.0, backoff_s=0.01, backoff_jitter_s=0.01, max_backoff_s=0.05)
FAULTS = Faults(
    http_5xx=0.15,
    http_429=0.05,
    timeout=0.05,
    truncated=0.05,
    invalid_json=0.05,
    slow=0.05,
    hang_s=1.2,
    slow_s=0.02,
    seed=3,
)

RECORDS = [
    record(1, "The Shawshank Redemption", 1994, "tt0111161"),
    record(2, "La cité des enfants perdus", 1995, "tt0112682"),
    record(3, "Heat", 1996, "tt0113277"),  # OMDb's year is one off MovieLens's
    record(4, "Star Trek II: The Wrath of Khan", 1982, "tt0084726"),  # corrupt poster file
    record(6, "Toy Story", 1995, "tt0114709"),
    record(7, "Quiet Film", 1960, "tt0050000", plot="N/A", poster=None),
]
ITEMS = [
    {"item_id": 0, "source_id": "1", "title": "Shawshank Redemption, The (1994)", "year": 1994},
    {
        "item_id": 1,
        "source_id": "2",
        "year": 1995,
        "title": "City of Lost Children, The (Cité des enfants perdus, La) (1995)",
    },
    {"item_id": 2, "source_id": "3", "title": "Heat (1995)", "year": 1995},
    {"item_id": 3, "source_id": "4", "title": "Star Trek: The Wrath of Khan (1982)", "year": 1982},
    {"item_id": 4, "source_id": "5", "title": "Nothing Like It (1990)", "year": 1990},
    {"item_id": 5, "source_id": "6", "title": "Toy (1995)", "year": 1995},
    {"item_id": 6, "source_id": "7", "title": "Quiet Film (1960)", "year": 1960},
    {"item_id": 7, "source_id": "8", "title": None, "year": None},
    {"item_id": 8, "source_id": "9", "title": "Toy Story (1995)", "year": 1995, "imdb_id": "tt0000001"},
]


@pytest.fixture()
def world(tmp_path):
    write_posters(tmp_path / "posters")
    links = tmp_path / "links.csv"
    links.write_text("movieId,imdbId,tmdbId\n1,0111161,278\n3,113277,949\n5,,\n")
    srv = OmdbServer(Catalogue(RECORDS, tmp_path / "posters"), {KEY}).start()
    yield srv, links, tmp_path
    srv.stop()


def run(store, items, srv, cache, **kw):
    kw.setdefault("workers", 0)
    kw.setdefault("threads_per_worker", 4)
    kw.setdefault("rate_per_s", None)
    kw.setdefault("http", FAST)
    kw.setdefault("api_key", KEY)
    return crawl_omdb(store, items, base_url=srv.url, cache_dir=cache, **kw)


def content(store, res):
    return (store.read_table(res.item_text).to_pylist(), store.read_table(res.item_images).to_pylist())


def matches(store, res):
    lines = store.read_file(res.item_text, "matches.jsonl").decode().splitlines()
    return {m["item_id"]: m for m in map(json.loads, lines)}


def test_each_lookup_method_and_reason(world):
    srv, links, tmp = world
    store = ArtifactStore(tmp / "store")
    items = publish_items(store, ITEMS)
    res = run(store, items, srv, tmp / "cache", links=links)
    m = matches(store, res)
    assert {i: (m[i]["method"], m[i]["reason"]) for i in m} == {
        0: ("imdb_id", None),
        1: ("title_year", None),
        2: ("imdb_id", None),
        3: ("search", None),
        4: (None, "not_found"),
        5: (None, "no_close_match"),
        6: ("title_year", None),
        7: (None, "no_query"),
        8: ("title_year", None),
    }
    assert m[1]["query"] == "t=La Cité des enfants perdus&y=1995"
    assert m[3]["query"] == "s=Star Trek: The Wrath of Khan" and m[3]["score"] > 0.9
    text = {r["item_id"]: r for r in store.read_table(res.item_text).to_pylist()}
    assert text[0]["title"] == "The Shawshank Redemption" and text[0]["present"]
    assert text[0]["imdb_id"] == "tt0111161" and text[0]["director"] == "Director 1"
    assert text[0]["text"] == "The plot of The Shawshank Redemption. It goes on."
    assert json.loads(text[0]["raw_json"])["imdbID"] == "tt0111161"
    assert text[6]["present"] is False and text[6]["reason"] == "no_plot"
    assert text[4]["reason"] == "no_match:not_found" and text[4]["text"] is None
    images = {r["item_id"]: r for r in store.read_table(res.item_images).to_pylist()}
    assert (images[0]["format"], images[0]["width"], images[0]["height"]) == ("JPEG", 12, 18)
    assert images[1]["format"] == "PNG" and images[2]["format"] == "TIFF"  # named .jpg
    assert images[3]["present"] is False and images[3]["reason"] == "image_corrupt"
    assert images[6]["reason"] == "no_image_url" and images[7]["reason"] == "no_match:no_query"
    st = store.manifest(res.item_text).stats
    assert st["movies"] == 9 and st["matched"] == 6
    assert st["matched_by"] == {"imdb_id": 2, "search": 1, "title_year": 3}
    assert st["unmatched_by_reason"] == {"no_close_match": 1, "no_query": 1, "not_found": 1}
    assert srv.log.stats()["successful_requests_repeated"] == 0

    # Without links the same movies match by title (and year +-1).
    store2 = ArtifactStore(tmp / "store2")
    res2 = run(store2, publish_items(store2, ITEMS), srv, tmp / "cache2")
    m2 = matches(store2, res2)
    assert m2[0]["method"] == "title_year" and m2[2]["method"] == "title_near_year"
    assert m2[2]["query"] == "t=Heat&y=1996"


def test_faults_complete_without_repeating_a_success(world):
    srv, links, tmp = world
    clean_store = ArtifactStore(tmp / "clean")
    clean = run(clean_store, publish_items(clean_store, ITEMS), srv, tmp / "c1", links=links)
    srv.log.reset()
    srv.faults = FAULTS
    store = ArtifactStore(tmp / "faulty")
    res = run(store, publish_items(store, ITEMS), srv, tmp / "c2", links=links)
    stats = srv.log.stats()
    faults = {k: v for k, v in stats["by_outcome"].items() if k.startswith("fault:")}
    assert sum(faults.values()) >= 5, stats
    assert stats["successful_requests_repeated"] == 0, stats
    assert res.stats["retries"] >= 5
    assert content(store, res) == content(clean_store, clean)


def test_rerun_reuses_artifact_and_cache(world):
    srv, links, tmp = world
    store = ArtifactStore(tmp / "store")
    items = publish_items(store, ITEMS)
    first = run(store, items, srv, tmp / "cache", links=links)
    sent = srv.log.stats()["requests"]
    again = run(store, items, srv, tmp / "cache", links=links)
    assert (again.item_text, again.item_images) == (first.item_text, first.item_images)
    assert again.stats["reused_existing"] and srv.log.stats()["requests"] == sent
    other = ArtifactStore(tmp / "other")  # new store, same cache: nothing is sent again
    res = run(other, publish_items(other, ITEMS), srv, tmp / "cache", links=links)
    assert srv.log.stats()["requests"] == sent and res.stats["requests_sent"] == 0
    assert content(other, res) == content(store, first)


def test_request_limit_stops_cleanly_and_resumes(world):
    srv, links, tmp = world
    clean_store = ArtifactStore(tmp / "clean")
    clean = run(clean_store, publish_items(clean_store, ITEMS), srv, tmp / "c1", links=links)
    srv.log.reset()
    srv.set_limit(6)
    store = ArtifactStore(tmp / "store")
    items = publish_items(store, ITEMS)
    with pytest.raises(CrawlStopped) as exc:
        run(store, items, srv, tmp / "c2", links=links)
    assert exc.value.reason == "request_limit" and "Request limit reached!" in str(exc.value)
    assert "item_text" not in store.names() and "item_images" not in store.names()
    srv.set_limit(None)  # "tomorrow"
    res = run(store, items, srv, tmp / "c2", links=links)
    assert srv.log.stats()["successful_requests_repeated"] == 0
    assert content(store, res) == content(clean_store, clean)


def test_daily_quota_of_our_own(world):
    srv, links, tmp = world
    store = ArtifactStore(tmp / "store")
    items = publish_items(store, ITEMS)
    with pytest.raises(CrawlStopped) as exc:
        run(store, items, srv, tmp / "cache", links=links, daily_quota=4, threads_per_worker=1)
    assert exc.value.reason == "daily_quota" and "item_text" not in store.names()
    api = [k for k in srv.log.per_key() if k.startswith("/?")]
    assert len(api) == 4
    res = run(store, items, srv, tmp / "cache", links=links, daily_quota=1000)
    assert res.stats["movies"] == 9 and srv.log.stats()["successful_requests_repeated"] == 0


def test_invalid_key_stops_at_once(world):
    srv, links, tmp = world
    store = ArtifactStore(tmp / "store")
    items = publish_items(store, ITEMS)
    t0 = time.perf_counter()
    with pytest.raises(CrawlStopped) as exc:
        run(store, items, srv, tmp / "cache", api_key="not-the-key", threads_per_worker=2)
    assert time.perf_counter() - t0 < 5
    assert exc.value.reason == "invalid_key" and "Invalid API key!" in str(exc.value)
    assert "not-the-key" not in str(exc.value)
    assert srv.log.stats()["requests"] <= 2 and "item_text" not in store.names()


def test_secret_never_leaks(world, caplog, capsys, monkeypatch):
    srv, links, tmp = world
    monkeypatch.setenv("OMDB_API_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    srv.faults = FAULTS
    store = ArtifactStore(tmp / "store")
    items = publish_items(store, ITEMS)
    res = run(store, items, srv, tmp / "cache", links=links, api_key=None)
    assert res.stats["retries"] > 0  # retries were logged (at DEBUG), with their URLs
    errors = []
    # A dead server: connection errors carry the URL in requests' messages.
    dead = OmdbServer(Catalogue(RECORDS))
    dead_url = dead.url
    dead._httpd.server_close()
    with pytest.raises(CrawlIncomplete) as exc:
        crawl_omdb(
            store,
            items,
            base_url=dead_url,
            cache_dir=tmp / "cache-dead",
            workers=0,
            http=FAST,
            max_attempts=2,
            rate_per_s=None,
        )
    errors.append(str(exc.value))
    assert "apikey=***" in str(exc.value)
    with pytest.raises(CrawlStopped) as exc:  # a wrong key must not print itself either
        crawl_omdb(
            store,
            items,
            base_url=srv.url,
            api_key=KEY + "x",
            cache_dir=tmp / "c3",
            workers=0,
            http=FAST,
            rate_per_s=None,
        )
    errors.append(str(exc.value))
    assert "invalid" in errors[-1].lower()
    logging.getLogger("test").info("key object: %r %s", ApiKey(KEY), ApiKey(KEY))
    out = capsys.readouterr()
    haystacks = {
        "logs": caplog.text,
        "stdout": out.out,
        "stderr": out.err,
        "errors": "\n".join(errors),
        "stats": json.dumps(res.stats),
    }
    assert "GET /?" in caplog.text  # urllib3's request lines were captured, redacted
    for root, _, files in os.walk(tmp):
        for f in files:
            path = os.path.join(root, f)
            with open(path, "rb") as fh:
                haystacks[path] = fh.read().decode("latin-1")
    leaks = [where for where, text in haystacks.items() if KEY in text]
    assert not leaks
    assert any(p.endswith("manifest.json") for p in haystacks)
    assert any(p.endswith(".sqlite") for p in haystacks)


def test_key_sources(monkeypatch):
    from prefect.blocks import system

    calls = []

    class FakeSecret:
        def get(self):
            return "from-block"

    def load(name, *a, **k):
        calls.append(name)
        return FakeSecret()

    monkeypatch.setattr(system.Secret, "load", classmethod(lambda cls, name, *a, **k: load(name)))
    monkeypatch.setenv("OMDB_API_KEY", "from-env")
    assert resolve_api_key().reveal() == "from-env" and calls == []
    assert resolve_api_key("explicit").reveal() == "explicit"
    monkeypatch.delenv("OMDB_API_KEY")
    assert resolve_api_key(secret_block="my-block").reveal() == "from-block"
    assert calls == ["my-block"]
    with pytest.raises(MmirisError, match="OMDB_API_KEY"):
        resolve_api_key(secret_block=None)
    assert "from-block" not in repr(resolve_api_key(secret_block="x"))


def test_dask_cluster_gives_the_same_content(world):
    srv, links, tmp = world
    s1, s2 = ArtifactStore(tmp / "s1"), ArtifactStore(tmp / "s2")
    threads = run(s1, publish_items(s1, ITEMS), srv, tmp / "c1", links=links)
    dask = run(
        s2, publish_items(s2, ITEMS), srv, tmp / "c2", links=links, workers=2, threads_per_worker=2, rate_per_s=200
    )
    assert content(s2, dask) == content(s1, threads)
    assert dask.stats["rate_limit_per_s"] == 200


def test_cli(world, monkeypatch, capsys):
    from mmiris.cli import main

    srv, links, tmp = world
    store = ArtifactStore(tmp / "store")
    items = publish_items(store, ITEMS)
    monkeypatch.setenv("OMDB_API_KEY", KEY)
    args = [
        "--store",
        str(tmp / "store"),
        "crawl",
        "omdb",
        "--items",
        str(items),
        "--base-url",
        srv.url,
        "--links",
        str(links),
        "--cache-dir",
        str(tmp / "cache"),
        "--workers",
        "0",
        "--rate",
        "0",
        "--timeout",
        "1",
    ]
    srv.set_limit(3)
    assert main(args) == 3
    err = capsys.readouterr().err
    assert "request_limit" in err and "re-run" in err
    srv.set_limit(None)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "item_text: item_text@" in out and json.loads(out.strip().splitlines()[-1])["matched"] == 6
    monkeypatch.setenv("OMDB_API_KEY", "wrong-key")
    args[args.index(str(tmp / "cache"))] = str(tmp / "cache2")
    assert main(args + ["--no-posters"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Invalid API key!" in err and "wrong-key" not in err


def test_cli_runs_on_the_dask_scheduler_it_is_given(world, monkeypatch, capsys):
    """``--scheduler ADDRESS``: the crawl's tasks run on that cluster (the client comes from
    ``mmiris.cluster``), and the CLI's connection to it is closed when the crawl ends."""
    from mmiris.cli import main
    from mmiris.cluster import local_cluster
    from tests.waiting import wait_until

    srv, links, tmp = world
    store = ArtifactStore(tmp / "store")
    items = publish_items(store, ITEMS)
    monkeypatch.setenv("OMDB_API_KEY", KEY)
    with local_cluster(workers=1, threads_per_worker=2, processes=False) as cluster:
        scheduler = cluster.scheduler  # in this process: what it ran and who is connected
        args = ["--store", str(tmp / "store"), "crawl", "omdb", "--items", str(items), "--base-url", srv.url]
        args += ["--links", str(links), "--cache-dir", str(tmp / "cache"), "--rate", "0", "--timeout", "1"]
        assert main([*args, "--workers", "0", "--scheduler", cluster.scheduler_address]) == 0
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["matched"] == 6
        assert "crawl_omdb_chunk" in scheduler.task_prefixes  # on the cluster, not in local threads
        wait_until(lambda: set(scheduler.clients) == {"fire-and-forget"}, "the CLI's client closing", timeout_s=300)


def test_worker_processes_share_the_rate_and_stop_together(world):
    from mmiris.cluster import dask_client

    srv, links, tmp = world
    store = ArtifactStore(tmp / "store")
    items = publish_items(store, ITEMS)
    with dask_client(None, workers=2, processes=True, gpu=False) as client:  # 2 worker processes, 1 thread each
        srv.set_limit(5)
        with pytest.raises(CrawlStopped) as exc:
            run(store, items, srv, tmp / "cache", links=links, client=client, rate_per_s=40)
        assert exc.value.reason == "request_limit" and "item_text" not in store.names()
        srv.set_limit(None)
        t0 = time.perf_counter()
        res = run(store, items, srv, tmp / "cache", links=links, client=client, rate_per_s=40, chunk_size=1)
        elapsed = time.perf_counter() - t0
    # Each of the two processes got 20/s: the whole crawl stayed under the global 40/s
    # (plus the one request each process's bucket lets through at once).
    assert res.stats["requests_sent"] <= 40 * elapsed + 2
    assert srv.log.stats()["successful_requests_repeated"] == 0 and res.stats["matched"] == 6


def test_links_file_errors_name_file_and_line(tmp_path):
    from mmiris.errors import InputError
    from mmiris.ingest.movielens import read_links_file as read_links

    good = tmp_path / "links.csv"
    good.write_text("movieId,imdbId,tmdbId\n1,0114709,862\n2,113497,\n3,,\n")
    assert read_links(good) == {"1": "tt0114709", "2": "tt0113497"}
    bad = tmp_path / "bad.csv"
    bad.write_text("movieId,imdbId,tmdbId\n1,0114709,862\n2,tt-x,1\n")
    with pytest.raises(InputError, match=r"bad.csv:3: field 'imdb_id'"):
        read_links(bad)
    bad.write_text("id,imdb\n1,2\n")
    with pytest.raises(InputError, match=r"bad.csv:1: expected a header"):
        read_links(bad)


def _visible(store, name):
    return [m.ref for m in store.versions(name)]


def test_failed_second_publish_leaves_neither_and_keeps_the_good_versions(world):
    """item_text and item_images are one group: a real fault while moving item_images into
    place (its version folder is occupied by a stray, non-empty folder) takes the already
    moved item_text out again, and the versions published before stay the latest."""
    srv, links, tmp = world
    clean = ArtifactStore(tmp / "clean")  # the same inputs elsewhere: the version ids to expect
    want = run(clean, publish_items(clean, ITEMS), srv, tmp / "c0", links=links)
    store = ArtifactStore(tmp / "store")
    items = publish_items(store, ITEMS)
    good = run(store, items, srv, tmp / "cache", links=links, posters=False)
    stray = tmp / "store" / "item_images" / want.item_images.version / "part-00000.parquet"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"left by someone else")
    with pytest.raises(OSError):
        run(store, items, srv, tmp / "cache", links=links)
    assert _visible(store, "item_text") == [good.item_text] and _visible(store, "item_images") == [good.item_images]
    assert (store.latest("item_text"), store.latest("item_images")) == (good.item_text, good.item_images)
    assert not store.exists(want.item_text)  # moved in, then taken out again
    assert not list((tmp / "store" / "_staging").glob("*"))

    stray.unlink()
    stray.parent.rmdir()
    res = run(store, items, srv, tmp / "cache", links=links)  # answers come from the cache
    assert (res.item_text, res.item_images) == (want.item_text, want.item_images)
    assert res.stats["requests_sent"] == 0 and content(store, res) == content(clean, want)
    assert store.manifest(res.item_images).info["group"] == [str(res.item_text), str(res.item_images)]


def _crawl_killed_between_renames(store_root, items, srv, cache):
    """A crawl whose process dies (SIGKILL) between moving item_text and item_images into place."""
    real_rename, moved = os.rename, []

    def rename(src, dst):
        if "/_staging/" in str(src):
            moved.append(dst)
            if len(moved) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        return real_rename(src, dst)

    os.rename = rename  # in the forked child only
    run(ArtifactStore(store_root), items, srv, cache)


def test_crawl_killed_between_the_two_publishes_shows_neither(world):
    """SIGKILL after item_text is in place and before item_images is: no listing and no
    ``latest`` shows the half group, the good versions stay, and the next run completes the
    group from the cache."""
    import multiprocessing

    srv, links, tmp = world
    store = ArtifactStore(tmp / "store")
    items = publish_items(store, ITEMS)
    good = run(store, items, srv, tmp / "cache", posters=False)
    warm = ArtifactStore(tmp / "warm")  # fills the cache: the killed run only publishes
    want = run(warm, publish_items(warm, ITEMS), srv, tmp / "cache")
    # Forked (nothing pickled, nothing imported again): it reads every answer from the cache and publishes.
    proc = multiprocessing.get_context("fork").Process(
        target=_crawl_killed_between_renames, args=(str(tmp / "store"), items, srv, str(tmp / "cache"))
    )
    proc.start()
    proc.join(timeout=300)
    assert proc.exitcode == -signal.SIGKILL
    assert store.exists(want.item_text) and not store.exists(want.item_images)  # the half group, on disk
    assert store.manifest(want.item_text).info["group"] == [str(want.item_text), str(want.item_images)]
    assert _visible(store, "item_text") == [good.item_text] and _visible(store, "item_images") == [good.item_images]
    assert (store.latest("item_text"), store.latest("item_images")) == (good.item_text, good.item_images)

    assert store.gc_staging() == 1  # the killed process's staged item_images; the orphan is young
    res = run(store, items, srv, tmp / "cache")
    assert (res.item_text, res.item_images) == (want.item_text, want.item_images) and res.stats["requests_sent"] == 0
    assert (store.latest("item_text"), store.latest("item_images")) == (res.item_text, res.item_images)
    assert set(_visible(store, "item_images")) == {good.item_images, res.item_images}
