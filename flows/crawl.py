"""Flows: crawl OMDb (plots, posters) and Amazon product images (pipelines/crawl.py).

Network work, so the task retries — with delays, and only for what a retry can fix (see
flows/retry_policy.py): the response cache makes a retry continue where the last attempt
stopped, never repeating a request that succeeded. The OMDb API key comes from the worker's
``OMDB_API_KEY`` or the Prefect Secret block ``omdb-api-key``; it is never a parameter (the
UI shows parameters).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from mmiris.artifacts import ArtifactStore
from mmiris.flows.dask_cluster import existing_cluster
from mmiris.flows.retry_policy import retry_crawl
from mmiris.flows.stage_logs import forward_stage_logs, now
from mmiris.flows.ui_artifacts import artifact_key, finish_stage
from mmiris.pipelines.crawl import DEFAULT_BASE_URL, crawl_amazon_images, crawl_omdb

_RETRY: dict[str, Any] = dict(
    retries=3,
    retry_delay_seconds=[30, 120, 600],
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_crawl,
    cache_policy=NO_CACHE,
)


@task(name="crawl-omdb", **_RETRY)
def crawl_omdb_task(
    store: str | None,
    items: str,
    links: str | None,
    base_url: str,
    secret_block: str | None,
    rate_per_s: float | None,
    daily_quota: int | None,
    cache_dir: str | None,
    workers: int,
    threads_per_worker: int,
    posters: bool,
    dask_address: str | None,
) -> dict:
    with existing_cluster(dask_address) as client:
        res = crawl_omdb(
            ArtifactStore(store),
            items,
            links=links,
            base_url=base_url,
            secret_block=secret_block,
            rate_per_s=rate_per_s,
            daily_quota=daily_quota,
            cache_dir=cache_dir,
            workers=workers,
            threads_per_worker=threads_per_worker,
            posters=posters,
            client=client,
        )
    return {"item_text": str(res.item_text), "item_images": str(res.item_images), "stats": res.stats}


@task(name="crawl-amazon-images", **_RETRY)
def crawl_amazon_images_task(
    store: str | None,
    items: str,
    rate_per_s: float | None,
    cache_dir: str | None,
    workers: int,
    threads_per_worker: int,
    dask_address: str | None,
) -> str:
    with existing_cluster(dask_address) as client:
        return str(
            crawl_amazon_images(
                ArtifactStore(store),
                items,
                rate_per_s=rate_per_s,
                cache_dir=cache_dir,
                workers=workers,
                threads_per_worker=threads_per_worker,
                client=client,
            )
        )


@flow(name="crawl-omdb")
def crawl_omdb_flow(
    items: str = "items@latest",
    links: str | None = None,
    base_url: str = DEFAULT_BASE_URL,
    secret_block: str | None = "omdb-api-key",
    rate_per_s: float | None = 10.0,
    daily_quota: int | None = 1000,
    cache_dir: str | None = None,
    workers: int = 2,
    threads_per_worker: int = 4,
    posters: bool = True,
    dask_address: str | None = None,
    store: str | None = None,
) -> dict[str, str]:
    """Plots and posters of every item from OMDb -> item_text, item_images. Items without a
    match are kept with the reason. ``rate_per_s`` is global over all Dask workers;
    ``daily_quota`` counts requests per UTC day across runs (OMDb's free tier: 1,000)."""
    forward_stage_logs()
    started = now()
    res = crawl_omdb_task(
        store,
        items,
        links,
        base_url,
        secret_block,
        rate_per_s,
        daily_quota,
        cache_dir,
        workers,
        threads_per_worker,
        posters,
        dask_address,
    )
    stats = res.pop("stats")
    _show_crawl_stats(stats, "crawl omdb")
    return finish_stage(ArtifactStore(store), res, "crawl omdb", started)


@flow(name="crawl-amazon-images")
def crawl_amazon_images_flow(
    items: str = "items@latest",
    rate_per_s: float | None = 10.0,
    cache_dir: str | None = None,
    workers: int = 2,
    threads_per_worker: int = 4,
    dask_address: str | None = None,
    store: str | None = None,
) -> dict[str, str]:
    """Download every item's image URL -> item_images (content-checked; failures kept with a
    reason)."""
    forward_stage_logs()
    started = now()
    ref = crawl_amazon_images_task(store, items, rate_per_s, cache_dir, workers, threads_per_worker, dask_address)
    s = ArtifactStore(store)
    _show_crawl_stats(s.manifest(ref).stats, "crawl amazon images")
    return finish_stage(s, {"item_images": ref}, "crawl amazon images", started)


def _show_crawl_stats(stats: dict, title: str) -> None:
    from prefect.artifacts import create_table_artifact

    flat = [
        {"figure": k, "value": v if isinstance(v, (int, float, str, bool)) else str(v)}
        for k, v in sorted(stats.items())
    ]
    create_table_artifact(flat, key=artifact_key(title, "stats"), description=f"{title}: counts")
