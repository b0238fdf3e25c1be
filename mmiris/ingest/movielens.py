"""MovieLens readers: 100K (``u.data``/``u.item``), 1M/10M (``ratings.dat``/``movies.dat``,
``::``-separated) and the CSV releases (``ratings.csv``/``movies.csv``/``links.csv``).

The input is a folder, a file inside it, or the official zip archive. Text encoding: the
CSV releases are UTF-8; for the older files the default ``encoding=None`` tries UTF-8 and
falls back to ISO-8859-1 (what 100K and 1M use); an explicit encoding is used strictly.
User demographics (``u.user``, ``users.dat``) are not part of the paper's data and are not
read.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmiris.errors import InputError
from mmiris.ingest.archive import SourceFiles
from mmiris.ingest.delimited import Field, check_encoding, read_delimited
from mmiris.ingest.interactions import Interactions, build_interactions
from mmiris.ingest.items import imdb_tt, year_from_title

RATING_FIELDS = [
    Field("user"),
    Field("item"),
    Field("rating", "float", optional=True),
    Field("timestamp", optional=True),
]
GENRES_100K = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]
FLAVOURS = {"ratings.dat": "1m", "u.data": "100k", "ratings.csv": "csv"}


@dataclass
class MovieLensData:
    flavour: str  # "100k", "1m" (also 10M) or "csv"
    interactions: Interactions
    meta: dict[str, dict]  # MovieLens movieId (as text) -> item fields
    fingerprint: dict[str, str]  # file name -> sha256 (part of the artifact version)
    meta_stats: dict = field(default_factory=dict)  # counted metadata treatments
    info: dict = field(default_factory=dict)


def detect(files: SourceFiles) -> str:
    for name, flavour in FLAVOURS.items():
        if name in files:
            return flavour
    raise InputError(
        f"{files.path}: not a MovieLens dataset; expected one of "
        f"{sorted(FLAVOURS)} (100K, 1M/10M or CSV release) in the folder or zip"
    )


def fingerprint(files: SourceFiles) -> dict[str, str]:
    """sha256 of each file the reader uses: the content part of the artifact version."""
    flavour = detect(files)
    names = {
        "100k": ["u.data", "u.item", "u.genre"],
        "1m": ["ratings.dat", "movies.dat"],
        "csv": ["ratings.csv", "movies.csv"],
    }[flavour] + ["links.csv"]
    return {n: _sha(files.read(n)) for n in names if n in files}


def read_movielens(
    path: str | Path | SourceFiles, *, encoding: str | None = None, on_bad_lines: str = "error"
) -> MovieLensData:
    files = path if isinstance(path, SourceFiles) else SourceFiles(path, markers=tuple(FLAVOURS))
    path = files.path
    flavour = detect(files)
    if encoding is not None:
        check_encoding(encoding)
    ratings_name, movies_name, sep = {
        "100k": ("u.data", "u.item", "\t"),
        "1m": ("ratings.dat", "movies.dat", "::"),
        "csv": ("ratings.csv", "movies.csv", ","),
    }[flavour]
    raw = files.read(ratings_name)
    parsed = read_delimited(
        raw,
        source=files.where(ratings_name),
        sep=sep,
        fields=RATING_FIELDS,
        encoding=_enc(raw, encoding, flavour),
        header=flavour == "csv",
        on_bad_lines=on_bad_lines,
    )
    t = parsed.table
    inter = build_interactions(
        t.column("user").to_numpy(),
        t.column("item").to_numpy(),
        t.column("rating").combine_chunks(),
        t.column("timestamp").combine_chunks(),
    )
    inter.stats["malformed_lines_skipped"] = parsed.skipped_lines
    fingerprint = {ratings_name: _sha(raw)}
    meta: dict[str, dict] = {}
    meta_stats: dict = {"metadata_lines_skipped": 0}
    if movies_name in files:
        data = files.read(movies_name)
        fingerprint[movies_name] = _sha(data)
        src, enc = files.where(movies_name), _enc(data, encoding, flavour)
        if flavour == "100k":
            genres = GENRES_100K
            if "u.genre" in files:
                text = files.read("u.genre").decode("iso-8859-1")
                genres = [line.split("|")[0] for line in text.splitlines() if line.strip()]
            meta = read_u_item(data, src, enc, genres, on_bad_lines, meta_stats)
        elif flavour == "1m":
            meta = read_movies_dat(data, src, enc, on_bad_lines, meta_stats)
        else:
            meta = read_movies_csv(data, src, enc, on_bad_lines, meta_stats)
    if "links.csv" in files:
        data = files.read("links.csv")
        fingerprint["links.csv"] = _sha(data)
        add_links(meta, read_links_csv(data, files.where("links.csv"), on_bad_lines, meta_stats))
    rated = set(inter.item_source)
    meta_stats["movies_without_interactions"] = sum(1 for k in meta if k not in rated)
    return MovieLensData(
        flavour,
        inter,
        meta,
        fingerprint,
        meta_stats,
        info={"source": str(path), "flavour": flavour, "files": sorted(fingerprint)},
    )


def read_movies_dat(
    data: bytes, source: str, encoding: str | None = None, on_bad_lines: str = "error", stats: dict | None = None
) -> dict[str, dict]:
    """``MovieID::Title (Year)::Genre|Genre`` (ML-1M/10M)."""
    t = _count(
        read_delimited(
            data,
            source=source,
            sep="::",
            encoding=_enc(data, encoding, "1m"),
            fields=[Field("movie_id"), Field("title", "str"), Field("genres", "str")],
            on_bad_lines=on_bad_lines,
        ),
        stats,
    )
    return {
        str(m): _movie(title, genres.split("|") if genres else None)
        for m, title, genres in zip(
            t.column("movie_id").to_pylist(), t.column("title").to_pylist(), t.column("genres").to_pylist()
        )
    }


def read_movies_csv(
    data: bytes, source: str, encoding: str | None = "utf-8", on_bad_lines: str = "error", stats: dict | None = None
) -> dict[str, dict]:
    """``movieId,title,genres`` with CSV quoting (the CSV releases)."""
    t = _count(
        read_delimited(
            data,
            source=source,
            sep=",",
            encoding=encoding or "utf-8",
            header=True,
            quoted=True,
            on_bad_lines=on_bad_lines,
            fields=[Field("movie_id"), Field("title", "str"), Field("genres", "str")],
        ),
        stats,
    )
    out = {}
    for m, title, genres in zip(
        t.column("movie_id").to_pylist(), t.column("title").to_pylist(), t.column("genres").to_pylist()
    ):
        g = None if genres in ("", "(no genres listed)") else genres.split("|")
        out[str(m)] = _movie(title, g)
    return out


def read_u_item(
    data: bytes,
    source: str,
    encoding: str,
    genre_names: list[str],
    on_bad_lines: str = "error",
    stats: dict | None = None,
) -> dict[str, dict]:
    """``id|title|release date|video release|IMDb URL|19 genre flags`` (ML-100K)."""
    flags = [Field(f"genre_{g}") for g in genre_names]
    t = _count(
        read_delimited(
            data,
            source=source,
            sep="|",
            encoding=encoding,
            on_bad_lines=on_bad_lines,
            fields=[
                Field("movie_id"),
                Field("title", "str"),
                Field("release", "str"),
                Field("video_release", "str"),
                Field("imdb_url", "str"),
                *flags,
            ],
        ),
        stats,
    )
    flag_cols = np.column_stack([t.column(f.name).to_numpy() for f in flags])
    out = {}
    for row, (m, title, release) in enumerate(
        zip(t.column("movie_id").to_pylist(), t.column("title").to_pylist(), t.column("release").to_pylist())
    ):
        genres = [g for g, on in zip(genre_names, flag_cols[row]) if on]
        item = _movie(title, genres or None)
        if item["year"] is None and release[-4:].isdigit():
            item["year"] = int(release[-4:])
        out[str(m)] = item
    return out


def read_links_csv(data: bytes, source: str, on_bad_lines: str = "error", stats: dict | None = None) -> dict[str, str]:
    """MovieLens ``links.csv`` (``movieId,imdbId,tmdbId``) -> {movieId: "tt#######"}; movies
    without an IMDb id are left out. The one parser of this file (ingest, crawl, test server)."""
    header = data.split(b"\n", 1)[0].decode("utf-8", "replace").strip().lstrip("\ufeff")
    if not header.startswith("movieId,imdbId"):
        raise InputError(f"{source}:1: expected a header with movieId,imdbId[,tmdbId], got {header[:80]!r}")
    t = _count(
        read_delimited(
            data,
            source=source,
            sep=",",
            header=True,
            quoted=True,
            on_bad_lines=on_bad_lines,
            fields=[Field("movie_id"), Field("imdb_id", optional=True), Field("tmdb_id", "str", optional=True)],
        ),
        stats,
    )
    return {
        str(m): tt
        for m, i in zip(t.column("movie_id").to_pylist(), t.column("imdb_id").to_pylist())
        if (tt := imdb_tt(i))
    }


def read_links_file(path: str | os.PathLike) -> dict[str, str]:
    """``read_links_csv`` of the file at ``path``; an unreadable file is an InputError naming it."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read links file ({exc.strerror})") from None
    return read_links_csv(data, str(path))


def add_links(meta: dict[str, dict], links: dict[str, str]) -> None:
    for movie, tt in links.items():
        if movie in meta:
            meta[movie]["imdb_id"] = tt


def _count(parsed, stats: dict | None):
    """The parsed table; skipped metadata lines are added to ``stats``."""
    if stats is not None:
        stats["metadata_lines_skipped"] = stats.get("metadata_lines_skipped", 0) + parsed.skipped_lines
    return parsed.table


def _movie(title: str, genres: list[str] | None) -> dict:
    return {"title": title, "year": year_from_title(title), "genres": genres, "metadata_exact": True}


def _enc(data: bytes, encoding: str | None, flavour: str) -> str:
    """The explicit encoding, or UTF-8 when the bytes are valid UTF-8, else ISO-8859-1."""
    if encoding:
        return encoding
    if flavour == "csv":
        return "utf-8"
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        return "iso-8859-1"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
