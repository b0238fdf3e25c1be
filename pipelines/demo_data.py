"""Stage: publish the embedded, generated demo catalogue (``mmiris/demo/synthetic.py``) as the
four artifacts real data produces — ``interactions``, ``items``, ``item_images``,
``item_text`` — so every later stage (split, extract, train, …) treats it like real data.

    refs = generate_demo_dataset(store, n_users=300, n_items=200, seed=0)
    refs.interactions, refs.items, refs.item_images, refs.item_text
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import pyarrow as pa
from PIL import Image

from mmiris.artifacts import ArtifactRef, ArtifactStore, Output
from mmiris.artifacts.code_version import source_version
from mmiris.demo.synthetic import DemoCatalogue, DemoConfig, generate

log = logging.getLogger("mmiris.demo")
CODE = ("mmiris.pipelines.demo_data", "mmiris.demo")  # the generator and its tables

SOURCE = "generated"  # match_method / reason vocabulary for the demo's provenance


@dataclass(frozen=True)
class DemoRefs:
    interactions: ArtifactRef
    items: ArtifactRef
    item_images: ArtifactRef
    item_text: ArtifactRef


def generate_demo_dataset(
    store: ArtifactStore, *, n_users: int = 300, n_items: int = 200, seed: int = 0, name: str = "demo", **options
) -> DemoRefs:
    """Generate (or find) the demo catalogue. ``options`` are further ``DemoConfig`` fields
    (content_weight, missing_image_rate, …). Artifacts are named ``<name>-interactions``,
    ``<name>-items``, ``<name>-item_images``, ``<name>-item_text``."""
    config = DemoConfig(n_users=n_users, n_items=n_items, seed=seed, **options)
    params = {"generator": "mmiris.demo.synthetic", **config.to_dict()}
    cache: dict[str, DemoCatalogue] = {}

    def catalogue() -> DemoCatalogue:
        if "c" not in cache:
            t0 = time.perf_counter()
            cache["c"] = generate(config)
            log.info(
                "generated demo catalogue: %d users, %d items, %d interactions in %.1fs",
                n_users,
                n_items,
                len(cache["c"].users),
                time.perf_counter() - t0,
            )
        return cache["c"]

    refs = {}
    for kind, build in (
        ("interactions", _interactions),
        ("items", _items),
        ("item_images", _item_images),
        ("item_text", _item_text),
    ):
        refs[kind] = store.get_or_create(
            f"{name}-{kind}", kind, [], params, partial(_build, build, catalogue), source_version(*CODE)
        )
    return DemoRefs(**refs)


def _build(build: Callable[[DemoCatalogue], Output], catalogue: Callable[[], DemoCatalogue]) -> Output:
    return build(catalogue())


def _info(c: DemoCatalogue) -> dict:
    return {"source": "generated demo catalogue (mmiris.demo.synthetic); not real data", "genres": c.genre_names}


def _interactions(c: DemoCatalogue) -> Output:
    n_users, n_items = c.config.n_users, c.config.n_items
    inter = pa.table(
        {
            "user_id": pa.array(c.users, pa.int64()),
            "item_id": pa.array(c.items, pa.int64()),
            "rating": pa.array(c.ratings, pa.float32()),
            "timestamp": pa.array(c.timestamps, pa.int64()),
        }
    )
    users = pa.table(
        {
            "user_id": pa.array(np.arange(n_users), pa.int64()),
            "source_id": pa.array([f"demo-user-{u:05d}" for u in range(n_users)], pa.string()),
        }
    )
    stats = {
        "n_users": n_users,
        "n_items": n_items,
        "n_interactions": len(c.users),
        "items_without_interactions": int(n_items - len(np.unique(c.items))),
    }
    return Output({"interactions": inter, "users": users}, stats=stats, info=_info(c))


def _items(c: DemoCatalogue) -> Output:
    n = c.config.n_items
    table = pa.table(
        {
            "item_id": pa.array(np.arange(n), pa.int64()),
            "source_id": pa.array([f"demo-{i:05d}" for i in range(n)], pa.string()),
            "title": pa.array(c.titles, pa.string()),
            "year": pa.array(c.years, pa.int32()),
            "genres": pa.array([c.item_genre_names(i) for i in range(n)], pa.list_(pa.string())),
            "imdb_id": pa.nulls(n, pa.string()),
            "image_url": pa.nulls(n, pa.string()),
            "description": pa.nulls(n, pa.string()),
            "metadata_exact": pa.array([True] * n, pa.bool_()),
        }
    )
    return Output({"items": table}, stats={"n_items": n}, info=_info(c))


def _item_images(c: DemoCatalogue) -> Output:
    rows: dict[str, list] = {
        k: [] for k in ("item_id", "image", "present", "reason", "sha256", "width", "height", "format", "source_url")
    }
    for i, data in enumerate(c.posters):
        rows["item_id"].append(i)
        rows["image"].append(data)
        rows["present"].append(data is not None)
        rows["reason"].append(None if data is not None else "missing_in_demo")
        if data is None:
            for k in ("sha256", "width", "height", "format", "source_url"):
                rows[k].append(None)
            continue
        with Image.open(io.BytesIO(data)) as img:  # decode by content, as the crawler does
            rows["width"].append(img.width)
            rows["height"].append(img.height)
            rows["format"].append(img.format)
        rows["sha256"].append(hashlib.sha256(data).hexdigest())
        rows["source_url"].append(f"generated://demo/poster/{i}")
    table = pa.table(
        {
            "item_id": pa.array(rows["item_id"], pa.int64()),
            "image": pa.array(rows["image"], pa.binary()),
            "present": pa.array(rows["present"], pa.bool_()),
            "reason": pa.array(rows["reason"], pa.string()),
            "sha256": pa.array(rows["sha256"], pa.string()),
            "width": pa.array(rows["width"], pa.int32()),
            "height": pa.array(rows["height"], pa.int32()),
            "format": pa.array(rows["format"], pa.string()),
            "source_url": pa.array(rows["source_url"], pa.string()),
        }
    )
    present = sum(rows["present"])
    return Output(
        {"item_images": table},
        stats={"items": len(c.posters), "present": present, "missing_in_demo": len(c.posters) - present},
        info=_info(c),
    )


def _item_text(c: DemoCatalogue) -> Output:
    n = c.config.n_items
    genres = [", ".join(c.item_genre_names(i)) for i in range(n)]
    raw = [
        json.dumps(
            {"Title": c.titles[i], "Year": str(int(c.years[i])), "Genre": genres[i], "Plot": c.plots[i] or "N/A"},
            sort_keys=True,
        )
        for i in range(n)
    ]
    table = pa.table(
        {
            "item_id": pa.array(np.arange(n), pa.int64()),
            "text": pa.array(c.plots, pa.string()),
            "present": pa.array([p is not None for p in c.plots], pa.bool_()),
            "reason": pa.array([None if p is not None else "missing_in_demo" for p in c.plots], pa.string()),
            "title": pa.array(c.titles, pa.string()),
            "genre": pa.array(genres, pa.string()),
            "director": pa.nulls(n, pa.string()),
            "actors": pa.nulls(n, pa.string()),
            "year": pa.array([str(int(y)) for y in c.years], pa.string()),
            "imdb_id": pa.nulls(n, pa.string()),
            "match_method": pa.array([SOURCE] * n, pa.string()),
            "raw_json": pa.array(raw, pa.string()),
        }
    )
    present = sum(p is not None for p in c.plots)
    return Output(
        {"item_text": table}, stats={"items": n, "present": present, "missing_in_demo": n - present}, info=_info(c)
    )
