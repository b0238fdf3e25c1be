"""``mmiris crawl omdb|amazon``: crawl OMDb plots/posters or Amazon product images.

Exit codes: 0 published; 2 a problem to fix (bad input, invalid API key, wrong base URL);
3 stopped but resumable (request limit or daily quota reached, or requests that kept
failing): nothing was published, everything fetched is cached, run the same command again
(tomorrow, for a quota) to continue. The API key is read from ``$OMDB_API_KEY`` or a Prefect
Secret block, never from the command line (it would land in shell history and ``ps``).
"""

from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser(
        "crawl",
        help="crawl OMDb (plots, posters) or Amazon product images",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    csub = p.add_subparsers(dest="crawl_source", metavar="SOURCE")
    csub.required = True

    o = csub.add_parser("omdb", help="OMDb plots and posters for MovieLens items")
    o.add_argument("--items", required=True, help="items artifact (NAME, NAME@latest or NAME@VERSION)")
    o.add_argument("--links", default=None, help="MovieLens links.csv (movieId,imdbId,tmdbId)")
    o.add_argument(
        "--base-url", default=None, help="OMDb API base URL (default https://www.omdbapi.com/; a mirror or test server)"
    )
    o.add_argument(
        "--secret-block",
        default="omdb-api-key",
        help="Prefect Secret block holding the key, used when $OMDB_API_KEY is unset",
    )
    o.add_argument(
        "--daily-quota",
        type=int,
        default=None,
        help="API requests per UTC day (e.g. 1000 for a free key); default: OMDb's own limit",
    )
    o.add_argument("--no-posters", action="store_true", help="do not download posters")
    _common(o)
    o.set_defaults(func=_omdb)

    a = csub.add_parser("amazon", help="download Amazon product images (items' image_url)")
    a.add_argument("--items", required=True, help="items artifact with image_url")
    _common(a)
    a.set_defaults(func=_amazon)


def _common(p) -> None:
    p.add_argument("--rate", type=float, default=10.0, help="requests/s over all workers (0: unlimited)")
    p.add_argument(
        "--cache-dir", default=None, help="response cache (default: $MMIRIS_CRAWL_CACHE or <store>/_crawl_cache)"
    )
    p.add_argument("--workers", type=int, default=2, help="Dask workers of a local cluster (0: no Dask, a thread pool)")
    p.add_argument("--threads", type=int, default=4, help="threads per worker")
    p.add_argument("--scheduler", default=None, help="address of a running Dask scheduler")
    p.add_argument("--timeout", type=float, default=10.0, help="HTTP read timeout in seconds")
    p.add_argument("--max-attempts", type=int, default=10, help="attempts per request")


def _http(args):
    from mmiris.http import HttpConfig

    return HttpConfig.for_crawling(args.timeout)


def _run(fn, base_url: str | None = None) -> int:
    import re

    from mmiris.crawl.parallel import CrawlIncomplete, CrawlStopped

    try:
        return fn()
    except CrawlStopped as exc:
        if exc.reason in ("invalid_key", "bad_response"):
            raise
        print(f"mmiris crawl: stopped ({exc.reason}): {exc}", file=sys.stderr)
        return 3
    except CrawlIncomplete as exc:
        # Every item failed to connect: the server is wrong or down, not a resumable crawl.
        m = re.search(r"(\d+) of (\d+) items still failed", str(exc))
        if base_url and m and m.group(1) == m.group(2) and "ConnectionError" in str(exc):
            print(
                f"mmiris crawl: error: --base-url {base_url}: no connection for any of the {m.group(2)} "
                f"items; expected a reachable OMDb-compatible server (nothing published)",
                file=sys.stderr,
            )
            return 2
        print(f"mmiris crawl: incomplete: {exc}", file=sys.stderr)
        return 3


def _omdb(args) -> int:
    from mmiris.artifacts import ArtifactStore
    from mmiris.pipelines.crawl import DEFAULT_BASE_URL, crawl_omdb

    def go() -> int:
        store = ArtifactStore()
        res = crawl_omdb(
            store,
            args.items,
            links=args.links,
            base_url=args.base_url or DEFAULT_BASE_URL,
            secret_block=args.secret_block,
            rate_per_s=args.rate or None,
            daily_quota=args.daily_quota,
            cache_dir=args.cache_dir,
            workers=args.workers,
            threads_per_worker=args.threads,
            client=args.scheduler,
            posters=not args.no_posters,
            http=_http(args),
            max_attempts=args.max_attempts,
        )
        print(f"item_text: {res.item_text}")
        print(f"item_images: {res.item_images}")
        keys = (
            "movies",
            "matched",
            "matched_by",
            "unmatched_by_reason",
            "text_present",
            "images_present",
            "requests_sent",
            "cache_hits",
            "seconds",
        )
        print(json.dumps({k: res.stats[k] for k in keys if k in res.stats}, sort_keys=True))
        return 0

    return _run(go, base_url=args.base_url)


def _amazon(args) -> int:
    from mmiris.artifacts import ArtifactStore
    from mmiris.pipelines.crawl import crawl_amazon_images

    def go() -> int:
        store = ArtifactStore()
        ref = crawl_amazon_images(
            store,
            args.items,
            rate_per_s=args.rate or None,
            cache_dir=args.cache_dir,
            workers=args.workers,
            threads_per_worker=args.threads,
            client=args.scheduler,
            http=_http(args),
            max_attempts=args.max_attempts,
        )
        m = store.manifest(ref)
        print(f"item_images: {ref}")
        print(json.dumps(m.stats, sort_keys=True))
        return 0

    return _run(go)
