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

The OMDb crawl's two artifacts are published as one group (``ArtifactStore.publish_group``,
as ingest does): a reader sees both or neither. A publish that fails between the two takes
the first out again; a process killed there leaves a version no listing or ``latest`` shows
(the next run completes the group from the cache); the versions published before stay as
they were.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmiris.artifacts import ArtifactRef, ArtifactStore, Output, Pending, file_sha256
from mmiris.artifacts.code_version import source_version
from mmiris.crawl.amazon import ImageTask, crawl_image_chunk
from mmiris.crawl.apikey import DEFAULT_SECRET_BLOCK, ApiKey, resolve_api_key
from mmiris.crawl.cache import CACHE_ENV, cache_location
from mmiris.crawl.fetcher import FetchSettings
from mmiris.crawl.omdb import DEFAULT_BASE_URL, MatchConfig, OmdbTask, crawl_omdb_chunk
from mmiris.crawl.parallel import CrawlIncomplete, CrawlStopped, default_chunk_size, new_run_id, run_chunks
from mmiris.crawl.ratelimit import process_share
from mmiris.crawl.tables import (
    check_complete,
    image_stats,
    images_table,
    matches_jsonl,
    omdb_tables,
    read_items,
    run_info,
)
from mmiris.http import HttpConfig, redact
from mmiris.ingest.movielens import read_links_file

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
    "DEFAULT_BASE_URL",
]


@dataclass
class CrawlResult:
    item_text: ArtifactRef
    item_images: ArtifactRef
    stats: dict = field(default_factory=dict)


@dataclass
class _Run:
    """How a crawl runs (the same for OMDb and images): Dask or threads, requests in flight,
    rate, quota, HTTP settings and retries."""

    rate_per_s: float | None
    daily_quota: int | None
    workers: int
    threads_per_worker: int
    concurrency: int | None
    client: Any
    http: HttpConfig | None
    max_attempts: int
    chunk_size: int | None

    def rows(
        self, chunk_fn, items: list[dict], task_of: Callable[[FetchSettings], Any], cache_dir, kind: str, what: str
    ):
        """Every item's row (sorted by item id) and the run's info; CrawlIncomplete if some
        item still failed, CrawlStopped at the request limit or quota (nothing published)."""
        run_id = new_run_id(kind)
        t0 = time.perf_counter()
        with _executor(self.client, self.workers, self.threads_per_worker) as dask_client:
            slots = self.concurrency or (
                _total_threads(dask_client) if dask_client is not None else max(1, self.threads_per_worker)
            )
            fetch = FetchSettings(
                run_id=run_id,
                cache_dir=str(cache_dir),
                rate_per_s=process_share(self.rate_per_s, dask_client),
                daily_quota=self.daily_quota,
                http=self.http or HttpConfig.for_crawling(),
                max_attempts=self.max_attempts,
            )
            log.info(
                "crawling %s for %d items (%s, %d in flight, rate %s/s, cache %s)",
                what,
                len(items),
                "Dask" if dask_client is not None else "threads",
                slots,
                self.rate_per_s or "unlimited",
                cache_dir,
            )
            res = run_chunks(
                chunk_fn,
                items,
                (task_of(fetch),),
                run_id=run_id,
                client=dask_client,
                concurrency=slots,
                chunk_size=self.chunk_size or default_chunk_size(len(items), slots),
                desc=f"crawl {kind}",
            )
        seconds = time.perf_counter() - t0
        check_complete(res.failed, len(items), what)
        rows = sorted(res.rows, key=lambda r: r["item_id"])
        return rows, run_info(res.counters, seconds, self.rate_per_s, cache_dir, self.daily_quota)


def _prefix(items_ref: ArtifactRef) -> str:
    """``ml-1m-items`` -> ``ml-1m-`` so outputs are ``ml-1m-item_text`` etc."""
    return items_ref.name[: -len("items")] if items_ref.name.endswith("items") else ""


@contextmanager
def _executor(client, workers: int, threads_per_worker: int):
    """A Dask client from ``mmiris.cluster``: the given one, one connected to the given
    scheduler address, or an in-process LocalCluster (``workers`` > 0); else none (threads)."""
    if client is None and workers <= 0:
        yield None
        return
    from mmiris.cluster import dask_client

    # Threads, not processes: the work is waiting on the network, and one process means one
    # rate-limit bucket and one in-process single-flight for identical requests.
    with dask_client(client, workers=workers, threads_per_worker=threads_per_worker, processes=False) as c:
        yield c


def _total_threads(client) -> int:
    info = client.scheduler_info()
    return max(1, sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()))


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
    limit); ``client``: a ``distributed.Client`` or a scheduler address (``tcp://host:8786``);
    ``workers``: Dask workers of an in-process LocalCluster when no ``client`` is given (0: a
    plain thread pool); ``concurrency``: chunk tasks in flight (default: all
    worker threads). Raises CrawlStopped / CrawlIncomplete without publishing (see module doc).
    """
    items_ref = store.resolve(items_ref)
    match = match or MatchConfig()
    links_map = read_links_file(links) if links else None
    params = {
        "source": "omdb",
        "base_url": redact(base_url),
        "links_sha256": file_sha256(Path(links)) if links else None,
        "match": match.params(),
        "posters": posters,
        "strategy": STRATEGY_VERSION,
    }
    run = _Run(
        rate_per_s, daily_quota, workers, threads_per_worker, concurrency, client, http, max_attempts, chunk_size
    )

    def crawl() -> dict[str, Output]:
        key = resolve_api_key(api_key, secret_block)
        items = read_items(store, items_ref, links_map)
        cache = cache_location(store, "omdb", cache_dir)

        def task(fetch: FetchSettings) -> OmdbTask:
            return OmdbTask(fetch=fetch, base_url=base_url, api_key=key, match=match, posters=posters)

        rows, info = run.rows(crawl_omdb_chunk, items, task, cache, "omdb", f"OMDb at {redact(base_url)}")
        info["base_url"] = redact(base_url)
        text, images, stats = omdb_tables(rows, posters)
        return {
            "item_text": Output(
                {"item_text": text}, files={"matches.jsonl": matches_jsonl(rows)}, stats=stats, info=info
            ),
            "item_images": Output({"item_images": images}, stats=image_stats(images), info=info),
        }

    prefix, code = _prefix(items_ref), source_version(*CODE)
    kinds = ("item_text", "item_images")
    refs = [store.ref_for(f"{prefix}{kind}", kind, [items_ref], params, code) for kind in kinds]
    reused = all(store.exists(r) for r in refs)
    if reused:
        log.info("found existing %s (same inputs and parameters); not crawling", ", ".join(map(str, refs)))
    else:
        outputs = crawl()
        refs = store.publish_group(
            [Pending(f"{prefix}{kind}", kind, outputs[kind], [items_ref], params, code) for kind in kinds]
        )
    m = store.manifest(refs[0])
    stats = {**m.stats, **m.info, "reused_existing": reused}
    return CrawlResult(refs[0], refs[1], stats)


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

    run = _Run(rate_per_s, None, workers, threads_per_worker, concurrency, client, http, max_attempts, chunk_size)

    def build() -> Output:
        items = read_items(store, items_ref, None)
        cache = cache_location(store, "images", cache_dir)
        rows, info = run.rows(crawl_image_chunk, items, ImageTask, cache, "images", "image URLs")
        images = images_table([(r["item_id"], r["image"], None) for r in rows])
        return Output({"item_images": images}, stats=image_stats(images), info=info)

    return store.get_or_create(
        f"{_prefix(items_ref)}item_images", "item_images", [items_ref], params, build, source_version(*CODE)
    )
