"""Crawl test doubles: posters, OMDb-shaped records, items artifacts (not for production).

Everything here is generated (no real data): tests start ``OmdbServer`` over these records.
"""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
from PIL import Image

from mmiris.artifacts import ArtifactRef, ArtifactStore, Output


def image_bytes(fmt: str = "JPEG", size: tuple[int, int] = (12, 18), color: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt)
    return buf.getvalue()


def write_posters(folder: Path) -> dict[str, bytes]:
    """Posters named .jpg of several real formats, plus broken ones; returns name -> bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    jpeg = image_bytes("JPEG", (12, 18), "red")
    files = {
        "1.jpg": jpeg,
        "2.jpg": image_bytes("PNG", (10, 15), "blue"),  # PNG named .jpg
        "3.jpg": image_bytes("TIFF", (8, 9), "green"),  # TIFF named .jpg
        "4.jpg": b"this is not an image at all" * 10,  # corrupt
        "5.jpg": jpeg[: len(jpeg) // 2],  # a truncated JPEG file (stored broken)
        "6.jpg": image_bytes("JPEG", (20, 30), "white"),
        "7.jpg": image_bytes("JPEG", (21, 31), "black"),
        "8.jpg": image_bytes("JPEG", (22, 32), "yellow"),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def record(
    movie_id: int,
    title: str,
    year: int | str,
    imdb: str | None = None,
    plot: str | None = None,
    poster: str | None = "auto",
    **extra,
) -> dict:
    """An OMDb-shaped record as in the shared ``omdb.jsonl`` (with ``movie_id``/``poster_file``)."""
    rec = {
        "movie_id": movie_id,
        "Title": title,
        "Year": str(year),
        "Rated": "PG",
        "Released": f"01 Jan {year}",
        "Genre": "Drama",
        "Director": f"Director {movie_id}",
        "Writer": "N/A",
        "Actors": f"Actor {movie_id}a, Actor {movie_id}b",
        "Plot": plot if plot is not None else f"The plot of {title}. It goes on.",
        "Poster": "https://example.invalid/p.jpg",
        "Response": "True",
        "poster_file": f"posters/{movie_id}.jpg" if poster == "auto" else poster,
    }
    if imdb:
        rec["imdbID"] = imdb
    rec.update(extra)
    return rec


def items_table(rows: list[dict]) -> pa.Table:
    """Rows with item_id, source_id, title, year, [imdb_id, image_url] -> an ``items`` table."""
    n = len(rows)

    def col(name, typ):
        return pa.array([r.get(name) for r in rows], typ)

    return pa.table(
        {
            "item_id": col("item_id", pa.int64()),
            "source_id": pa.array([str(r.get("source_id", r["item_id"])) for r in rows], pa.string()),
            "title": col("title", pa.string()),
            "year": col("year", pa.int32()),
            "genres": pa.array([None] * n, pa.list_(pa.string())),
            "imdb_id": col("imdb_id", pa.string()),
            "image_url": col("image_url", pa.string()),
            "description": pa.array([None] * n, pa.string()),
            "metadata_exact": pa.array([True] * n, pa.bool_()),
        }
    )


def publish_items(store: ArtifactStore, rows: list[dict], name: str = "items") -> ArtifactRef:
    return store.publish(
        name, "items", Output({"items": items_table(rows)}), params={"rows": [sorted(r.items()) for r in rows]}
    )
