"""Benchmark: crawl all ML-1M movies through the real crawler against a local OMDb server.

    python -m benchmarks.crawl_omdb [--faults] [--kill-halfway] [--limit N] [--data ../shared/data]

Starts ``python -m mmiris.testing.omdb_server`` (a separate process, so it does not share the
crawler's GIL) over ``<data>/ml-1m/omdb/omdb.jsonl`` and ``<data>/ml-1m/posters/`` (imdbIDs
from ``links.csv``), builds an items artifact of every movie in ``<data>/ml-1m/movies.dat``
(read with the ingest reader), and crawls it twice: with ``links.csv`` (IMDb ids first) and
without (titles only). ``--faults`` injects 10% HTTP 5xx, 5% timeouts (hangs), 2% invalid
JSON bodies, 2% 429s, 1% truncated bodies and 5% slow answers. ``--kill-halfway`` also runs
the with-links crawl as a ``mmiris crawl omdb`` subprocess, SIGKILLs it halfway, restarts it,
and compares the artifacts with the uninterrupted run's.

The last line of output is one JSON object; top-level figures are the with-links crawl's:
``movies``, ``matched``, ``matched_by``, ``unmatched_by_reason``, ``requests``,
``successful_requests_repeated``, ``requests_per_s``, ``seconds``; the without-links crawl
is under ``without_links``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("benchmarks.crawl_omdb")
KEY = "benchmark-key"


def _die(msg: str) -> None:
    print(f"crawl_omdb benchmark: {msg}", file=sys.stderr)
    sys.exit(2)


def _items_rows(movies_dat: Path, limit: int | None) -> list[dict]:
    """Every movie of movies.dat, read by the ingest helper's reader (local parse as fallback)."""
    data = movies_dat.read_bytes()
    try:
        from mmiris.ingest.movielens import read_movies_dat

        meta = read_movies_dat(data, str(movies_dat))
        movies = [(int(k), v["title"], v["year"]) for k, v in meta.items()]
    except ImportError:  # pragma: no cover (older trees)
        from mmiris.crawl.titles import split_year

        movies = []
        for line in data.decode("iso-8859-1").splitlines():
            mid, title, _ = line.split("::")
            movies.append((int(mid), title, split_year(title)[1]))
    movies.sort()
    if limit:
        movies = movies[:limit]
    return [
        {"item_id": i, "source_id": str(mid), "title": title, "year": year}
        for i, (mid, title, year) in enumerate(movies)
    ]


class Server:
    """The OMDb-compatible server in its own process."""

    def __init__(self, data: Path, faults: bool, seed: int):
        ml = data / "ml-1m"
        cmd = [
            sys.executable,
            "-m",
            "mmiris.testing.omdb_server",
            "--records",
            str(ml / "omdb" / "omdb.jsonl"),
            "--posters",
            str(ml / "posters"),
            "--links",
            str(ml / "links.csv"),
            "--port",
            "0",
            "--api-key",
            KEY,
            "--seed",
            str(seed),
        ]
        if faults:
            cmd += [
                "--fault-5xx",
                "0.10",
                "--fault-timeout",
                "0.05",
                "--fault-invalid-json",
                "0.02",
                "--fault-429",
                "0.02",
                "--fault-truncated",
                "0.01",
                "--fault-slow",
                "0.05",
                "--hang-s",
                "2.0",
                "--slow-s",
                "0.05",
            ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            self.proc.kill()
            _die(f"the OMDb server did not start (got {self.url!r})")

    def stats(self) -> dict:
        return requests.get(self.url + "__stats", timeout=10).json()

    def reset(self) -> None:
        requests.get(self.url + "__reset", timeout=10)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _crawl(store, items, server: Server, cache: Path, links: Path | None, args) -> dict:
    from mmiris.http import HttpConfig
    from mmiris.pipelines.crawl import crawl_omdb

    server.reset()
    t0 = time.perf_counter()
    res = crawl_omdb(
        store,
        items,
        links=links,
        base_url=server.url,
        api_key=KEY,
        cache_dir=cache,
        rate_per_s=args.rate or None,
        workers=args.workers,
        threads_per_worker=args.threads,
        max_attempts=args.max_attempts,
        http=HttpConfig(timeout_s=args.timeout, backoff_s=0.1, backoff_jitter_s=0.1, max_backoff_s=2.0),
    )
    seconds = time.perf_counter() - t0
    srv = server.stats()
    st = res.stats
    return {
        "movies": st["movies"],
        "matched": st["matched"],
        "match_rate": st["match_rate"],
        "matched_by": st["matched_by"],
        "unmatched_by_reason": st["unmatched_by_reason"],
        "text_present": st["text_present"],
        "images_present": st["images_present"],
        "image_formats": st["images_formats"],
        "requests": srv["requests"],
        "server_outcomes": srv["by_outcome"],
        "successful_requests_repeated": srv["successful_requests_repeated"],
        "retries": st["retries"],
        "requests_per_s": round(srv["requests"] / seconds, 1),
        "seconds": round(seconds, 2),
        "item_text": str(res.item_text),
        "item_images": str(res.item_images),
    }


def _kill_restart(store_dir: Path, items, server: Server, cache: Path, links: Path, expected: dict, args) -> dict:
    """Crawl in a subprocess, SIGKILL it halfway (by requests), restart, compare artifacts."""
    from mmiris.artifacts import ArtifactStore

    server.reset()
    cmd = [
        sys.executable,
        "-c",
        "import sys; from mmiris.cli import main; sys.exit(main(sys.argv[1:]))",
        "--store",
        str(store_dir),
        "crawl",
        "omdb",
        "--items",
        str(items),
        "--links",
        str(links),
        "--base-url",
        server.url,
        "--cache-dir",
        str(cache),
        "--workers",
        str(args.workers),
        "--threads",
        str(args.threads),
        "--rate",
        str(args.rate),
        "--timeout",
        str(args.timeout),
        "--max-attempts",
        str(args.max_attempts),
    ]
    env = {**os.environ, "OMDB_API_KEY": KEY}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    half = expected["requests"] // 2
    while server.stats()["requests"] < half:
        if proc.poll() is not None:
            _die(f"crawl subprocess ended before halfway: {proc.stderr.read().decode()[-500:]}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at_kill = server.stats()["requests"]
    store = ArtifactStore(store_dir)
    published_at_kill = [n for n in store.names() if n.endswith(("item_text", "item_images"))]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True)
    if done.returncode != 0:
        _die(f"restarted crawl failed: {done.stderr.decode()[-1000:]}")
    seconds = time.perf_counter() - t0
    srv = server.stats()
    ref_store = ArtifactStore(Path(args._store))
    same, latest = {}, {}
    for kind in ("item_text", "item_images"):
        name = expected[kind].split("@")[0]
        latest[kind] = str(store.latest(name))
        same[kind] = store.read_table(latest[kind]).equals(ref_store.read_table(expected[kind]))
    return {
        "killed_after_requests": at_kill,
        "published_at_kill": published_at_kill,
        "requests_total": srv["requests"],
        "successful_requests_repeated": srv["successful_requests_repeated"],
        "same_item_text": same["item_text"],
        "same_item_images": same["item_images"],
        "same_versions": latest == {k: expected[k] for k in latest},
        "seconds": round(seconds, 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.crawl_omdb", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="shared data folder")
    p.add_argument("--faults", action="store_true", help="inject 5xx/timeouts/invalid bodies/429/truncation")
    p.add_argument("--kill-halfway", action="store_true", help="also SIGKILL a crawl halfway and restart it")
    p.add_argument("--limit", type=int, default=None, help="only the first N movies (shorter run)")
    p.add_argument("--no-titles-run", action="store_true", help="skip the crawl without links.csv")
    p.add_argument("--workers", type=int, default=2, help="Dask workers (threads of one process)")
    p.add_argument("--threads", type=int, default=8, help="threads per worker")
    p.add_argument("--rate", type=float, default=0, help="requests/s limit (0: unlimited)")
    p.add_argument("--timeout", type=float, default=1.0, help="client read timeout, s")
    p.add_argument(
        "--max-attempts",
        type=int,
        default=15,
        help="attempts per request (with 20%% faults, 10 fail together ~1e-7 of the time)",
    )
    p.add_argument("--seed", type=int, default=0, help="fault injection seed")
    p.add_argument("--keep", default=None, help="keep the store/caches in this folder")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("distributed").setLevel(logging.WARNING)
    data = Path(args.data)
    ml = data / "ml-1m"
    for need in (ml / "movies.dat", ml / "links.csv", ml / "omdb" / "omdb.jsonl", ml / "posters"):
        if not need.exists():
            _die(f"{need} not found: point --data at the shared benchmark data (see its README)")

    from mmiris.artifacts import ArtifactStore
    from mmiris.testing.crawl import publish_items

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mmiris-crawl-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    args._store = str(work / "store")
    store = ArtifactStore(args._store)
    rows = _items_rows(ml / "movies.dat", args.limit)
    items = publish_items(store, rows, name="ml-1m-items")
    server = Server(data, args.faults, args.seed)
    try:
        with_links = _crawl(store, items, server, work / "cache-links", ml / "links.csv", args)
        out = {
            k: with_links[k]
            for k in (
                "movies",
                "matched",
                "matched_by",
                "unmatched_by_reason",
                "requests",
                "successful_requests_repeated",
                "requests_per_s",
                "seconds",
            )
        }
        out.update({"match_rate_with_links": with_links["match_rate"], "faults": args.faults, "with_links": with_links})
        if not args.no_titles_run:
            titles_store = ArtifactStore(work / "store-titles")
            titles_items = publish_items(titles_store, rows, name="ml-1m-items")
            without = _crawl(titles_store, titles_items, server, work / "cache-titles", None, args)
            out["match_rate_without_links"] = without["match_rate"]
            out["without_links"] = without
        if args.kill_halfway:
            kstore = work / "store-kill"
            kitems = publish_items(ArtifactStore(kstore), rows, name="ml-1m-items")
            out["kill_restart"] = _kill_restart(
                kstore, kitems, server, work / "cache-kill", ml / "links.csv", with_links, args
            )
    finally:
        server.close()
    out["workers"], out["threads_per_worker"] = args.workers, args.threads
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
