"""Flows: ingest MovieLens, the NCF pre-split files, or Amazon reviews (pipelines/ingest.py),
and the content of items that arrived after training (pipelines/new_items.py).

Sources are local paths or http(s) URLs; downloads are the retryable part (network), bad
files are not (InputError names file, line and field and fails the run at once).
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from mmiris.artifacts import ArtifactStore
from mmiris.flows.retry_policy import retry_unless_user_error
from mmiris.flows.stage_logs import forward_stage_logs, now
from mmiris.flows.ui_artifacts import finish_stage
from mmiris.pipelines.ingest import IngestResult, ingest_amazon, ingest_movielens, ingest_ncf
from mmiris.pipelines.new_items import ingest_new_items

BadLines = Literal["error", "skip"]  # stop at the first bad line, or skip and count them

_RETRY: dict[str, Any] = dict(
    retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=retry_unless_user_error, cache_policy=NO_CACHE
)


def _refs(res: IngestResult) -> dict[str, str]:
    out = {"interactions": str(res.interactions), "items": str(res.items)}
    if res.split is not None:
        out["split"] = str(res.split)
    return out


@task(name="ingest-movielens", **_RETRY)
def ingest_movielens_task(
    store: str | None, source: str, name_prefix: str, encoding: str | None, on_bad_lines: str, cache: str | None
) -> dict[str, str]:
    return _refs(
        ingest_movielens(
            ArtifactStore(store),
            source,
            name_prefix=name_prefix,
            encoding=encoding,
            on_bad_lines=on_bad_lines,
            cache=cache,
        )
    )


@task(name="ingest-ncf", **_RETRY)
def ingest_ncf_task(
    store: str | None,
    train: str,
    test: str,
    negatives: str,
    item_map: str | None,
    movies: str | None,
    links: str | None,
    seed: int,
    name_prefix: str,
    on_bad_lines: str,
    cache: str | None,
) -> dict[str, str]:
    return _refs(
        ingest_ncf(
            ArtifactStore(store),
            train,
            test,
            negatives,
            item_map=item_map,
            movies=movies,
            links=links,
            seed=seed,
            name_prefix=name_prefix,
            on_bad_lines=on_bad_lines,
            cache=cache,
        )
    )


@task(name="ingest-amazon", **_RETRY)
def ingest_amazon_task(
    store: str | None,
    reviews: str,
    meta: str | None,
    kcore: int,
    name_prefix: str,
    on_bad_lines: str,
    cache: str | None,
) -> dict[str, str]:
    return _refs(
        ingest_amazon(
            ArtifactStore(store),
            reviews,
            meta,
            kcore=kcore,
            name_prefix=name_prefix,
            on_bad_lines=on_bad_lines,
            cache=cache,
        )
    )


@task(name="ingest-new-items", **_RETRY)
def ingest_new_items_task(
    store: str | None,
    jsonl: str | None,
    images_dir: str | None,
    id_field: str,
    text_field: str,
    title_field: str,
    name: str,
) -> dict[str, str]:
    res = ingest_new_items(
        ArtifactStore(store),
        jsonl,
        images_dir,
        id_field=id_field,
        text_field=text_field,
        title_field=title_field,
        name=name,
    )
    refs = {"item_text": res.item_text, "item_images": res.item_images}
    return {kind: str(ref) for kind, ref in refs.items() if ref is not None}


@flow(name="ingest-movielens")
def ingest_movielens_flow(
    source: str,
    name_prefix: str = "",
    encoding: str | None = None,
    on_bad_lines: BadLines = "error",
    cache: str | None = None,
    store: str | None = None,
) -> dict[str, str]:
    """MovieLens 100K/1M/10M or a CSV release (folder, zip or URL) -> interactions, items."""
    forward_stage_logs()
    started = now()
    refs = ingest_movielens_task(store, source, name_prefix, encoding, on_bad_lines, cache)
    return finish_stage(ArtifactStore(store), refs, f"ingest movielens {name_prefix}", started)


@flow(name="ingest-ncf")
def ingest_ncf_flow(
    train: str,
    test: str,
    negatives: str,
    item_map: str | None = None,
    movies: str | None = None,
    links: str | None = None,
    seed: int = 0,
    name_prefix: str = "",
    on_bad_lines: BadLines = "error",
    cache: str | None = None,
    store: str | None = None,
) -> dict[str, str]:
    """NCF pre-split files (``*.train.rating``, ``*.test.rating``, ``*.test.negative``) ->
    interactions, items and the split that keeps the given test items and negatives."""
    forward_stage_logs()
    started = now()
    refs = ingest_ncf_task(
        store, train, test, negatives, item_map, movies, links, seed, name_prefix, on_bad_lines, cache
    )
    return finish_stage(ArtifactStore(store), refs, f"ingest ncf {name_prefix}", started)


@flow(name="ingest-amazon")
def ingest_amazon_flow(
    reviews: str,
    meta: str | None = None,
    kcore: int = 5,
    name_prefix: str = "",
    on_bad_lines: BadLines = "error",
    cache: str | None = None,
    store: str | None = None,
) -> dict[str, str]:
    """Amazon reviews (2014 or 2018, + metadata) -> k-core interactions and items."""
    forward_stage_logs()
    started = now()
    refs = ingest_amazon_task(store, reviews, meta, kcore, name_prefix, on_bad_lines, cache)
    return finish_stage(ArtifactStore(store), refs, f"ingest amazon {name_prefix}", started)


@flow(name="ingest-new-items")
def ingest_new_items_flow(
    jsonl: str | None = None,
    images_dir: str | None = None,
    id_field: str = "movie_id",
    text_field: str = "Plot",
    title_field: str = "Title",
    name: str = "new",
    store: str | None = None,
) -> dict[str, str]:
    """Items that arrived after training: records (``jsonl``, one JSON object per line: the id
    in ``id_field``, the text in ``text_field``, the title in ``title_field``) and/or a folder
    of ``<item id>.<ext>`` images (``images_dir``) -> ``<name>_item_text`` /
    ``<name>_item_images``, published together; the ``new_items`` of the recommend flow."""
    forward_stage_logs()
    started = now()
    refs = ingest_new_items_task(store, jsonl, images_dir, id_field, text_field, title_field, name)
    return finish_stage(ArtifactStore(store), refs, f"ingest new items {name}", started)
