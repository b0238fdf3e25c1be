"""Stage: crawl OMDb (plots, posters) for MovieLens items, and Amazon product images.

``crawl_omdb(store, items_ref, ...) -> CrawlResult(item_text, item_images, stats)`` and
``crawl_amazon_images(store, items_ref, ...) -> ArtifactRef``. The CLI (``mmiris crawl``) and
the Prefect flow call these.

Publishing rule: a crawl publishes only when every item is settled — matched, or recorded
with a reason (no match, no plot, no poster, a 404, a corrupt image). A crawl stopped by the
request limit, the daily quota or an invalid key (``CrawlStopped``), or one where some
requests still failed after every retry (``CrawlIncomplete``), publishes nothing: its
progress lives in the response cache, and the next run with the same arguments continues
from there without repeating a request that succeeded. Artifacts therefore never look
complete when they are not, and an interrupted-then-resumed crawl publishes the same content
as an uninterrupted one.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from mmiris.artifacts import ArtifactRef, ArtifactStore, Output
from mmiris.artifacts.code_version import source_version
from mmiris.crawl.amazon import ImageTask, crawl_image_chunk
from mmiris.crawl.apikey import DEFAULT_SECRET_BLOCK, ApiKey, resolve_api_key
from mmiris.crawl.cache import CACHE_ENV, cache_location, open_cache
from mmiris.crawl.fetcher import Counters, FetchSettings
from mmiris.crawl.omdb import DEFAULT_BASE_URL, MatchConfig, OmdbTask, crawl_omdb_chunk
from mmiris.crawl.parallel import CrawlIncomplete, CrawlStopped, default_chunk_size, new_run_id, run_chunks
from mmiris.crawl.ratelimit import process_share
from mmiris.errors import InputError
from mmiris.http import HttpConfig, redact

log = logging.getLogger("mmiris.crawl")
CODE = ("mmiris.pipelines.crawl", "mmiris.crawl")  # matching, parsing, the tables written

STRATEGY_VERSION = 1  # bump when the lookup strategy changes what matches
DEFAULT_CACHE_ENV = CACHE_ENV

__all__ = [
    "CrawlResult",
    "CrawlStopped",
    "CrawlIncomplete",
    "crawl_omdb",
    "crawl_amazon_images",
    "read_links",
    "DEFAULT_BASE_URL",
]


@dataclass
class CrawlResult:
    item_text: ArtifactRef
    item_images: ArtifactRef
    stats: dict = field(default_factory=dict)


# ------------------------------------------------------------------ inputs
def read_links(path: str | os.PathLike) -> dict[str, str]:
    """MovieLens ``links.csv`` -> {movieId (str): 'tt0114709'}; bad lines raise InputError."""
    path = Path(path)
    out: dict[str, str] = {}
    try:
        f = open(path, newline="", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read links file ({exc.strerror})") from None
    with f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header or "movieId" not in header or "imdbId" not in header:
            raise InputError(f"{path}:1: expected a header with movieId,imdbId[,tmdbId], got {header!r}")
        mi, ii = header.index("movieId"), header.index("imdbId")
        for n, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                movie, imdb = row[mi].strip(), row[ii].strip()
                int(movie)
            except (IndexError, ValueError):
                raise InputError(f"{path}:{n}: field movieId: expected an integer movie id, got {row!r}") from None
            if not imdb:
                continue  # no IMDb id known for this movie
            digits = imdb.removeprefix("tt")
            if not digits.isdigit():
                raise InputError(f"{path}:{n}: field imdbId: expected digits (e.g. 0114709), got {imdb!r}")
            out[movie] = f"tt{int(digits):07d}"
    return out


def _file_sha256(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _read_items(store: ArtifactStore, items_ref: ArtifactRef, links: dict[str, str] | None):
    t = store.read_table(items_ref, "items", columns=["item_id", "source_id", "title", "year", "imdb_id", "image_url"])
    items = []
    for r in t.to_pylist():
        imdb = r["imdb_id"] or (links or {}).get(str(r["source_id"]))
        items.append(
            {
                "item_id": int(r["item_id"]),
                "title": r["title"],
                "year": r["year"],
                "imdb_id": imdb,
                "image_url": r["image_url"],
            }
        )
    items.sort(key=lambda it: it["item_id"])
    return items


def _default_cache_dir(store: ArtifactStore, sub: str) -> str:
    """``$MMIRIS_CRAWL_CACHE``/sub, else ``<store>/_crawl_cache/<sub>`` on the store's own
    filesystem (S3 included): every machine that reads the store shares the crawl's cache."""
    return cache_location(store, sub)


def _prefix(items_ref: ArtifactRef) -> str:
    """``ml-1m-items`` -> ``ml-1m-`` so outputs are ``ml-1m-item_text`` etc."""
    return items_ref.name[: -len("items")] if items_ref.name.endswith("items") else ""


@contextmanager
def _executor(client, workers: int, threads_per_worker: int):
    """The given Dask client, an in-process LocalCluster (``workers`` > 0), or none (threads)."""
    if client is not None or workers <= 0:
        yield client
        return
    from mmiris.cluster import dask_client

    # Threads, not processes: the work is waiting on the network, and one process means one
    # rate-limit bucket and one in-process single-flight for identical requests.
    with dask_client(None, workers=workers, threads_per_worker=threads_per_worker, processes=False) as c:
        yield c


def _fetch_settings(run_id, cache_dir, rate_share, daily_quota, http, max_attempts):
    http = http or HttpConfig(timeout_s=10.0, backoff_s=0.2, backoff_jitter_s=0.2, max_backoff_s=10.0)
    return FetchSettings(
        run_id=run_id,
        cache_dir=str(cache_dir),
        rate_per_s=rate_share,
        daily_quota=daily_quota,
        http=http,
        max_attempts=max_attempts,
    )


def _check_complete(failed: list[tuple[int, str]], total: int, what: str) -> None:
    if failed:
        sample = "; ".join(f"item {i}: {msg}" for i, msg in failed[:3])
        raise CrawlIncomplete(
            f"{what}: {len(failed)} of {total} items still failed after every retry (e.g. {sample}); "
            "nothing published; re-run to retry only those (all other answers are cached)"
        )


# ------------------------------------------------------------------ OMDb
def crawl_omdb(
    store: ArtifactStore,
    items_ref: ArtifactRef | str,
    *,
    links: str | os.PathLike | None = None,
    base_url: str = DEFAULT_BASE_URL,
    api_key: str | ApiKey | None = None,
    secret_block: str | None = DEFAULT_SECRET_BLOCK,
    rate_per_s: float | None = 10.0,
    daily_quota: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 2,
    threads_per_worker: int = 4,
    concurrency: int | None = None,
    client=None,
    match: MatchConfig | None = None,
    posters: bool = True,
    http: HttpConfig | None = None,
    max_attempts: int = 10,
    chunk_size: int | None = None,
) -> CrawlResult:
    """Crawl OMDb for every item and publish ``<prefix>item_text`` and ``<prefix>item_images``.

    ``rate_per_s``: global requests/s over all workers (None or 0: unlimited);
    ``daily_quota``: API requests per UTC day counted across runs (None: only OMDb's own
    limit); ``workers``: Dask workers of an in-process LocalCluster when no ``client`` is
    given (0: a plain thread pool); ``concurrency``: chunk tasks in flight (default: all
    worker threads). Raises CrawlStopped / CrawlIncomplete without publishing (see module doc).
    """
    items_ref = store.resolve(items_ref)
    match = match or MatchConfig()
    links_map = read_links(links) if links else None
    params = {
        "source": "omdb",
        "base_url": redact(base_url),
        "links_sha256": _file_sha256(links) if links else None,
        "match": match.params(),
        "posters": posters,
        "strategy": STRATEGY_VERSION,
    }
    prefix = _prefix(items_ref)
    built: dict = {}

    def crawl_once() -> dict:
        if not built:
            built.update(
                _crawl_omdb(
                    store,
                    items_ref,
                    links_map,
                    base_url,
                    api_key,
                    secret_block,
                    rate_per_s,
                    daily_quota,
                    cache_dir,
                    workers,
                    threads_per_worker,
                    concurrency,
                    client,
                    match,
                    posters,
                    http,
                    max_attempts,
                    chunk_size,
                )
            )
        return built

    text_ref = store.get_or_create(
        f"{prefix}item_text", "item_text", [items_ref], params, lambda: crawl_once()["text"], source_version(*CODE)
    )
    images_ref = store.get_or_create(
        f"{prefix}item_images",
        "item_images",
        [items_ref],
        params,
        lambda: crawl_once()["images"],
        source_version(*CODE),
    )
    m = store.manifest(text_ref)
    stats = {**m.stats, **m.info, "reused_existing": not built}
    return CrawlResult(text_ref, images_ref, stats)


def _slots(concurrency, dask_client, threads_per_worker: int) -> int:
    """Requests in flight: as asked, else every Dask thread, else this process's threads."""
    if concurrency:
        return concurrency
    return _total_threads(dask_client) if dask_client is not None else max(1, threads_per_worker)


def _crawl_omdb(
    store,
    items_ref,
    links_map,
    base_url,
    api_key,
    secret_block,
    rate_per_s,
    daily_quota,
    cache_dir,
    workers,
    threads_per_worker,
    concurrency,
    client,
    match,
    posters,
    http,
    max_attempts,
    chunk_size,
) -> dict:
    key = resolve_api_key(api_key, secret_block)
    items = _read_items(store, items_ref, links_map)
    cache_dir = cache_location(store, "omdb", cache_dir)
    run_id = new_run_id("omdb")
    t0 = time.perf_counter()
    with _executor(client, workers, threads_per_worker) as dask_client:
        slots = _slots(concurrency, dask_client, threads_per_worker)
        task = OmdbTask(
            fetch=_fetch_settings(
                run_id, cache_dir, process_share(rate_per_s, dask_client), daily_quota, http, max_attempts
            ),
            base_url=base_url,
            api_key=key,
            match=match,
            posters=posters,
        )
        log.info(
            "crawling OMDb at %s for %d items (%s, %d in flight, rate %s/s, cache %s)",
            redact(base_url),
            len(items),
            "Dask" if dask_client is not None else "threads",
            slots,
            rate_per_s or "unlimited",
            cache_dir,
        )
        res = run_chunks(
            crawl_omdb_chunk,
            items,
            (task,),
            run_id=run_id,
            client=dask_client,
            concurrency=slots,
            chunk_size=chunk_size or default_chunk_size(len(items), slots),
            desc="crawl omdb",
        )
    seconds = time.perf_counter() - t0
    _check_complete(res.failed, len(items), "OMDb crawl")
    rows = sorted(res.rows, key=lambda r: r["item_id"])
    text, images, stats = _omdb_outputs(rows, posters)
    info = _run_info(res.counters, seconds, rate_per_s, cache_dir, daily_quota)
    info["base_url"] = redact(base_url)
    return {
        "text": Output({"item_text": text}, files={"matches.jsonl": _matches_jsonl(rows)}, stats=stats, info=info),
        "images": Output({"item_images": images}, stats=_image_stats(images), info=info),
    }


def _total_threads(client) -> int:
    info = client.scheduler_info()
    return max(1, sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()))


def _na(v):
    return None if v in (None, "", "N/A") else str(v)


def _omdb_outputs(rows: list[dict], posters: bool):
    text_cols: dict[str, list] = {
        k: []
        for k in (
            "item_id",
            "text",
            "present",
            "reason",
            "title",
            "genre",
            "director",
            "actors",
            "year",
            "imdb_id",
            "match_method",
            "raw_json",
        )
    }
    matched_by: Counter = Counter()
    unmatched: Counter = Counter()
    for r in rows:
        rec = r["record"] or {}
        plot = _na(rec.get("Plot"))
        if r["matched"]:
            matched_by[r["method"]] += 1
            reason = None if plot else "no_plot"
        else:
            unmatched[r["reason"]] += 1
            reason = f"no_match:{r['reason']}"
        text_cols["item_id"].append(r["item_id"])
        text_cols["text"].append(plot if r["matched"] else None)
        text_cols["present"].append(bool(r["matched"] and plot))
        text_cols["reason"].append(reason)
        for col, fld in (
            ("title", "Title"),
            ("genre", "Genre"),
            ("director", "Director"),
            ("actors", "Actors"),
            ("year", "Year"),
            ("imdb_id", "imdbID"),
        ):
            text_cols[col].append(_na(rec.get(fld)))
        text_cols["match_method"].append(r["method"])
        text_cols["raw_json"].append(r["raw"])
    text = pa.table({k: pa.array(v, type=_TEXT_TYPES.get(k, pa.string())) for k, v in text_cols.items()})
    image_rows: list[tuple[int, bytes | None, str | None]] = []
    for r in rows:
        if not r["matched"]:
            image_rows.append((r["item_id"], None, f"no_match:{r['reason']}"))
        elif not posters:
            image_rows.append((r["item_id"], None, "posters_not_crawled"))
        else:
            image_rows.append((r["item_id"], r["image"], None))
    images = _images_table(image_rows)
    text_missing = Counter(x for x in text_cols["reason"] if x)
    stats = {
        "movies": len(rows),
        "matched": sum(matched_by.values()),
        "matched_by": dict(sorted(matched_by.items())),
        "unmatched_by_reason": dict(sorted(unmatched.items())),
        "match_rate": round(sum(matched_by.values()) / len(rows), 4) if rows else 0.0,
        "text_present": sum(text_cols["present"]),
        "text_missing_by_reason": dict(sorted(text_missing.items())),
    }
    stats.update({f"images_{k}": v for k, v in _image_stats(images).items()})
    return text, images, stats


_TEXT_TYPES = {"item_id": pa.int64(), "present": pa.bool_()}


def _images_table(image_rows) -> pa.Table:
    cols: dict[str, list] = {
        k: [] for k in ("item_id", "image", "present", "reason", "sha256", "width", "height", "format", "source_url")
    }
    for item_id, res, reason in image_rows:
        cols["item_id"].append(item_id)
        ok = res is not None and res.present
        cols["image"].append(res.data if ok else None)
        cols["present"].append(ok)
        cols["reason"].append(None if ok else (reason or res.reason))
        info = res.info if ok else None
        cols["sha256"].append(info.sha256 if info else None)
        cols["width"].append(info.width if info else None)
        cols["height"].append(info.height if info else None)
        cols["format"].append(info.format if info else None)
        cols["source_url"].append(res.source_url if res is not None else None)
    types = {
        "item_id": pa.int64(),
        "image": pa.binary(),
        "present": pa.bool_(),
        "width": pa.int32(),
        "height": pa.int32(),
    }
    return pa.table({k: pa.array(v, type=types.get(k, pa.string())) for k, v in cols.items()})


def _image_stats(images: pa.Table) -> dict:
    present = images.column("present").to_pylist()
    reasons = Counter(r for r in images.column("reason").to_pylist() if r)
    formats = Counter(f for f in images.column("format").to_pylist() if f)
    return {
        "items": images.num_rows,
        "present": sum(present),
        "missing_by_reason": dict(sorted(reasons.items())),
        "formats": dict(sorted(formats.items())),
    }


def _matches_jsonl(rows: list[dict]) -> bytes:
    lines = [
        json.dumps(
            {
                "item_id": r["item_id"],
                "matched": r["matched"],
                "method": r["method"],
                "query": r["query"],
                "score": r["score"],
                "reason": r["reason"],
                "lookups": r["tried"],
            },
            sort_keys=True,
            ensure_ascii=False,
        )
        for r in rows
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _run_info(counters: Counters, seconds: float, rate_per_s, cache_dir, daily_quota) -> dict:
    info = counters.as_dict()
    info.update(
        {
            "seconds": round(seconds, 3),
            "requests_per_s": round(counters.sent / seconds, 2) if seconds > 0 else 0.0,
            "rate_limit_per_s": rate_per_s,
            "daily_quota": daily_quota,
            "cache_dir": str(cache_dir),
        }
    )
    try:
        info["api_requests_today"] = open_cache(cache_dir).quota_used()
    except Exception:  # noqa: BLE001 (informational only)
        pass
    return info


# ------------------------------------------------------------------ Amazon
def crawl_amazon_images(
    store: ArtifactStore,
    items_ref: ArtifactRef | str,
    *,
    rate_per_s: float | None = 10.0,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 2,
    threads_per_worker: int = 4,
    concurrency: int | None = None,
    client=None,
    http: HttpConfig | None = None,
    max_attempts: int = 10,
    chunk_size: int | None = None,
) -> ArtifactRef:
    """Download every item's ``image_url`` into ``<prefix>item_images`` (content-checked).

    Items without a URL, with a definitive HTTP refusal (404, 410, ...) or with bytes that
    do not decode are kept with ``present=false`` and a reason. Publishing rule as for OMDb."""
    items_ref = store.resolve(items_ref)
    params = {"source": "amazon_image_url", "strategy": STRATEGY_VERSION}

    def build() -> Output:
        items = _read_items(store, items_ref, None)
        cdir = cache_location(store, "images", cache_dir)
        run_id = new_run_id("images")
        t0 = time.perf_counter()
        with _executor(client, workers, threads_per_worker) as dask_client:
            slots = _slots(concurrency, dask_client, threads_per_worker)
            task = ImageTask(
                _fetch_settings(run_id, cdir, process_share(rate_per_s, dask_client), None, http, max_attempts)
            )
            res = run_chunks(
                crawl_image_chunk,
                items,
                (task,),
                run_id=run_id,
                client=dask_client,
                concurrency=slots,
                chunk_size=chunk_size or default_chunk_size(len(items), slots),
                desc="crawl images",
            )
        seconds = time.perf_counter() - t0
        _check_complete(res.failed, len(items), "image crawl")
        rows = sorted(res.rows, key=lambda r: r["item_id"])
        images = _images_table([(r["item_id"], r["image"], None) for r in rows])
        info = _run_info(res.counters, seconds, rate_per_s, cdir, None)
        return Output({"item_images": images}, stats=_image_stats(images), info=info)

    return store.get_or_create(
        f"{_prefix(items_ref)}item_images", "item_images", [items_ref], params, build, source_version(*CODE)
    )
