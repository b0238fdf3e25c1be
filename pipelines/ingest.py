"""Ingest stage: source files (local paths or http(s) URLs) -> ``interactions`` + ``items``
(+ ``split`` for the NCF pre-split format).

Each artifact's version is keyed by the sha256 of the input files and the options, so
ingesting the same files again returns the existing versions without parsing anything.
Artifact names are ``<name_prefix>interactions``, ``<name_prefix>items`` and
``<name_prefix>split`` (checked against the store's name grammar before anything is read).
Everything is read and checked first; then the artifacts are published together
(``ArtifactStore.publish_group``): a reader sees all of them or none.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from mmiris.artifacts import ArtifactRef, ArtifactStore, Output, Pending, check_name, file_sha256
from mmiris.artifacts.code_version import source_version
from mmiris.errors import InputError
from mmiris.http import redact
from mmiris.ingest import amazon, movielens, ncf
from mmiris.ingest.archive import SourceFiles
from mmiris.ingest.download import fetch, is_url
from mmiris.ingest.interactions import build_interactions
from mmiris.ingest.items import items_output
from mmiris.ingest.kcore import kcore_mask

log = logging.getLogger("mmiris.ingest")
CODE = ("mmiris.pipelines.ingest", "mmiris.ingest", "mmiris.splits")  # readers, k-core, NCF split


@dataclass(frozen=True)
class IngestResult:
    interactions: ArtifactRef
    items: ArtifactRef
    split: ArtifactRef | None = None

    def refs(self) -> list[ArtifactRef]:
        return [r for r in (self.interactions, self.items, self.split) if r is not None]


# Parsing happens lazily, at most once (functools.cache), and only when some artifact is
# not in the store yet: get_or_create calls the builders only for missing versions.
_once = functools.cache


def _names(name_prefix: str, roles: tuple[str, ...] = ("interactions", "items")) -> dict[str, str]:
    """Artifact names per role, checked before any input is read."""
    return {r: check_name(f"{name_prefix}{r}", f"--name-prefix {name_prefix!r}: artifact name") for r in roles}


def _publish_together(
    store: ArtifactStore, plan: list[tuple[str, str, list, dict]], build: Callable[[], list[Output]]
) -> list[ArtifactRef]:
    """Publish ``plan`` ((name, kind, parents, params) each) as one group, building the outputs
    only when some member is missing from the store."""
    refs = [store.ref_for(n, k, p, prm, source_version(*CODE)) for n, k, p, prm in plan]
    if all(store.exists(r) for r in refs):
        log.info("found existing %s (same inputs and parameters); not recomputing", ", ".join(map(str, refs)))
        return refs
    outputs = build()
    return store.publish_group(
        [Pending(n, k, out, list(p), prm, source_version(*CODE)) for (n, k, p, prm), out in zip(plan, outputs)]
    )


def _where(source) -> str:
    return redact(str(source)) if is_url(source) else str(Path(source).expanduser().resolve())


def ingest_movielens(
    store: ArtifactStore,
    source: str | Path,
    *,
    name_prefix: str = "",
    encoding: str | None = None,
    on_bad_lines: str = "error",
    cache: str | Path | None = None,
) -> IngestResult:
    """MovieLens 100K / 1M / 10M / CSV release from a folder, zip archive or URL."""
    names = _names(name_prefix)
    files = SourceFiles(fetch(source, cache=cache), markers=tuple(movielens.FLAVOURS))
    params = {
        "format": "movielens",
        "files": movielens.fingerprint(files),
        "encoding": encoding,
        "on_bad_lines": on_bad_lines,
    }
    info = {"source": _where(source)}

    def build() -> list[Output]:
        d = movielens.read_movielens(files, encoding=encoding, on_bad_lines=on_bad_lines)
        rows = [d.meta.get(s) for s in d.interactions.item_source]
        return [
            d.interactions.output({**info, "flavour": d.flavour}),
            items_output(d.interactions.item_source, rows, stats=d.meta_stats, info=info),
        ]

    inter = store.ref_for(names["interactions"], "interactions", [], params, source_version(*CODE))
    refs = _publish_together(
        store, [(names["interactions"], "interactions", [], params), (names["items"], "items", [inter], params)], build
    )
    return IngestResult(*refs)


def ingest_ncf(
    store: ArtifactStore,
    train: str | Path,
    test: str | Path | None = None,
    negatives: str | Path | None = None,
    *,
    item_map: str | Path | None = None,
    movies: str | Path | None = None,
    links: str | Path | None = None,
    seed: int = 0,
    n_valid_negatives: int | None = None,
    name_prefix: str = "",
    on_bad_lines: str = "error",
    cache: str | Path | None = None,
) -> IngestResult:
    """The NCF pre-split files -> interactions (train + test rows), items and the split.

    ``item_map`` (``ncf_item, movie_id, exact``) joins ``movies`` (movies.dat or movies.csv)
    and ``links`` (links.csv) to the NCF item ids; see :func:`mmiris.ingest.ncf.ncf_split`
    for how the validation rows are made. ``train`` alone may be the folder holding the three
    files (``mmiris.ingest.ncf.ncf_sources``).
    """
    train, test, negatives = ncf.ncf_sources([s for s in (train, test, negatives) if s is not None])
    if (movies or links) and not item_map:
        raise InputError("--movies/--links need --item-map: NCF item ids are not MovieLens movieIds")
    names = _names(name_prefix, ("interactions", "items", "split"))
    paths = {
        "train": fetch(train, cache=cache),
        "test": fetch(test, cache=cache),
        "negatives": fetch(negatives, cache=cache),
    }
    for key, src in (("item_map", item_map), ("movies", movies), ("links", links)):
        if src:
            paths[key] = fetch(src, cache=cache)
    params = {"format": "ncf", "files": {k: file_sha256(p) for k, p in paths.items()}, "on_bad_lines": on_bad_lines}
    info = {
        "sources": {
            k: _where(v)
            for k, v in dict(
                train=train, test=test, negatives=negatives, item_map=item_map, movies=movies, links=links
            ).items()
            if v
        }
    }

    @_once
    def data():
        # Everything is read and checked before anything is published.
        movie_of, exact = ncf.read_item_map(paths["item_map"]) if "item_map" in paths else ({}, {})
        d = ncf.read_ncf(
            paths["train"],
            paths["test"],
            paths["negatives"],
            item_map_items=max(movie_of, default=-1) + 1,
            on_bad_lines=on_bad_lines,
        )
        split = ncf.ncf_split(d, seed=seed, n_valid_negatives=n_valid_negatives).output(info)
        if "item_map" not in paths:
            items = items_output([str(i) for i in range(d.n_items)], [None] * d.n_items, info=info)
            return d, items, split
        meta: dict[str, dict] = {}
        stats: dict = {"metadata_lines_skipped": 0}
        if "movies" in paths:
            p = paths["movies"]
            reader = movielens.read_movies_csv if p.suffix == ".csv" else movielens.read_movies_dat
            meta = reader(p.read_bytes(), str(p), on_bad_lines=on_bad_lines, stats=stats)
        if "links" in paths:
            p = paths["links"]
            movielens.add_links(
                meta, movielens.read_links_csv(p.read_bytes(), str(p), on_bad_lines=on_bad_lines, stats=stats)
            )
        sources, rows, map_stats = ncf.ncf_item_rows(d.n_items, movie_of, exact, meta)
        return d, items_output(sources, rows, stats={**stats, **map_stats}, info=info), split

    inter = store.ref_for(names["interactions"], "interactions", [], params, source_version(*CODE))
    split_params = {**params, "seed": seed, "n_valid_negatives": n_valid_negatives}
    refs = _publish_together(
        store,
        [
            (names["interactions"], "interactions", [], params),
            (names["items"], "items", [inter], params),
            (names["split"], "split", [inter], split_params),
        ],
        lambda: [data()[0].interactions.output(info), data()[1], data()[2]],
    )
    return IngestResult(*refs)


def ingest_amazon(
    store: ArtifactStore,
    reviews: str | Path,
    meta: str | Path | None = None,
    *,
    kcore: int = 5,
    name_prefix: str = "",
    on_bad_lines: str = "error",
    cache: str | Path | None = None,
) -> IngestResult:
    """Amazon 2014/2018 reviews (+ metadata) -> k-core interactions and items (ASINs)."""
    if kcore < 1:
        raise InputError(f"kcore={kcore}: expected a number >= 1 (1 keeps everything)")
    names = _names(name_prefix)
    paths = {"reviews": fetch(reviews, cache=cache)}
    if meta:
        paths["meta"] = fetch(meta, cache=cache)
    params = {
        "format": "amazon",
        "files": {k: file_sha256(p) for k, p in paths.items()},
        "kcore": kcore,
        "on_bad_lines": on_bad_lines,
    }
    info = {"sources": {k: _where(v) for k, v in dict(reviews=reviews, meta=meta).items() if v}}

    @_once
    def data():
        # Everything is read and checked before anything is published.
        r = amazon.read_reviews(paths["reviews"], on_bad_lines=on_bad_lines)
        inter = build_interactions(
            np.asarray(r.users, dtype=object),
            np.asarray(r.items, dtype=object),
            pa.array(r.ratings, pa.float32()),
            pa.array(r.timestamps, pa.int64()),
        )
        keep, iterations = kcore_mask(inter.user, inter.item, kcore)
        n_before, users_before, items_before = len(keep), inter.n_users, inter.n_items
        inter = inter.select(keep)
        if not len(inter.user):
            raise InputError(
                f"{paths['reviews']}: no interactions left after {kcore}-core filtering "
                f"({n_before} before); expected a larger dataset or a smaller --kcore"
            )
        inter.stats.update(
            malformed_lines_skipped=r.skipped_lines,
            kcore=kcore,
            kcore_iterations=iterations,
            kcore_interactions_removed=int(n_before - len(inter.user)),
            kcore_users_removed=users_before - inter.n_users,
            kcore_items_removed=items_before - inter.n_items,
        )
        asins = inter.item_source
        m = amazon.read_meta(paths["meta"], set(asins), on_bad_lines=on_bad_lines) if meta else None
        rows = [m.by_asin.get(a) for a in asins] if m else [None] * len(asins)
        return inter, items_output(asins, rows, stats=m.stats if m else {}, info=info)

    inter = store.ref_for(names["interactions"], "interactions", [], params, source_version(*CODE))
    refs = _publish_together(
        store,
        [(names["interactions"], "interactions", [], params), (names["items"], "items", [inter], params)],
        lambda: [data()[0].output(info), data()[1]],
    )
    return IngestResult(*refs)
