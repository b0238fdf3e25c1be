"""Item metadata rows to the ``items`` artifact, in the dense item-id order of interactions."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa

from mmiris.artifacts import Output

META_FIELDS = ("title", "year", "genres", "imdb_id", "image_url", "description", "metadata_exact")
_YEAR = re.compile(r"\((\d{4})(?:[-–]\d{0,4})?\)\s*$")


def year_from_title(title: str | None) -> int | None:
    """``"Toy Story (1995)"`` -> 1995."""
    m = _YEAR.search(title or "")
    return int(m.group(1)) if m else None


def imdb_tt(imdb_id: str | int | None) -> str | None:
    """links.csv's ``114709`` -> ``tt0114709``."""
    if imdb_id is None or str(imdb_id).strip() in ("", "0"):
        return None
    digits = str(imdb_id).strip().removeprefix("tt")
    return f"tt{digits.zfill(7)}"


def items_output(
    source_ids: list[str], rows: list[dict | None], *, stats: dict | None = None, info: dict | None = None
) -> Output:
    """One row per dense item id i: ``source_ids[i]`` and the META_FIELDS of ``rows[i]``
    (None where no metadata is known; counted as ``items_without_metadata``)."""
    cols: dict[str, list] = {f: [] for f in META_FIELDS}
    missing = 0
    for m in rows:
        if m is None:
            missing += 1
            m = {}
        for f in META_FIELDS:
            cols[f].append(m.get(f))
    n = len(source_ids)
    table = pa.table(
        {
            "item_id": np.arange(n, dtype=np.int64),
            "source_id": pa.array(source_ids, pa.string()),
            "title": pa.array(cols["title"], pa.string()),
            "year": pa.array(cols["year"], pa.int32()),
            "genres": pa.array(cols["genres"], pa.list_(pa.string())),
            "imdb_id": pa.array(cols["imdb_id"], pa.string()),
            "image_url": pa.array(cols["image_url"], pa.string()),
            "description": pa.array(cols["description"], pa.string()),
            "metadata_exact": pa.array(cols["metadata_exact"], pa.bool_()),
        }
    )
    return Output(
        tables={"items": table},
        stats={"n_items": n, "items_without_metadata": missing, **(stats or {})},
        info=dict(info or {}),
    )
