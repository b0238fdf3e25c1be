"""Amazon review data (McAuley et al.): the 2014 and 2018 releases, gzipped or plain.

- Reviews (2014 ``reviews_<Category>.json.gz``, 2018 ``<Category>.json.gz``): one JSON object
  per line with ``reviewerID``, ``asin``, ``overall`` and ``unixReviewTime``.
- Metadata (``meta_<Category>.json.gz``): 2014 lines are Python literals (single quotes,
  read with ``ast.literal_eval``), with ``title``, ``imUrl``, ``description``, ``categories``
  (a list of category paths); 2018 lines are JSON with ``title``, ``image`` (a list of URLs),
  ``description`` (a list of paragraphs) and ``category``. Each line is tried as JSON first,
  then as a Python literal, so either release (or a mix) reads the same way.

Only metadata lines of products that survive the k-core filter are parsed in full.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import json
import math
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mmiris.errors import InputError
from mmiris.ingest.delimited import BAD_LINE_POLICIES, INT64_MAX, INT64_MIN

_ASIN = re.compile(r"""["']asin["']\s*:\s*["']([^"']+)["']""")


@dataclass
class Reviews:
    users: list[str]
    items: list[str]
    ratings: list[float | None]
    timestamps: list[int | None]
    sha256: str
    skipped_lines: int = 0


@dataclass
class Meta:
    by_asin: dict[str, dict]
    sha256: str
    stats: dict = field(default_factory=dict)


def _lines(path: Path) -> tuple[Iterator[tuple[int, str]], str]:
    """Decoded lines (line number, text) of a gzip or plain file, streamed, and its sha256."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        magic = f.read(2)
        h.update(magic)
        while block := f.read(1 << 20):
            h.update(block)

    def gen():
        opener = gzip.open if magic == b"\x1f\x8b" else open
        lineno = 0
        try:
            with opener(path, "rb") as f:
                for lineno, line in enumerate(f, 1):
                    try:
                        text = line.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        raise InputError(
                            f"{path}:{lineno}: byte {line[exc.start : exc.start + 1]!r} "
                            f"is not UTF-8; expected UTF-8 JSON lines"
                        ) from None
                    if text.strip():
                        yield lineno, text
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(
                f"{path}: corrupt gzip data after line {lineno} ({exc}); expected a complete .gz file"
            ) from None

    return gen(), h.hexdigest()


def _record(text: str) -> dict:
    try:
        obj = json.loads(text)
    except ValueError:
        try:
            obj = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise ValueError("not a JSON object nor a Python literal dict") from None
    if not isinstance(obj, dict):
        raise ValueError(f"expected an object, got a {type(obj).__name__}")
    return obj


def read_reviews(path: str | Path, *, on_bad_lines: str = "error") -> Reviews:
    if on_bad_lines not in BAD_LINE_POLICIES:
        raise InputError(f"on_bad_lines={on_bad_lines!r}: expected one of {BAD_LINE_POLICIES}")
    path = Path(path)
    lines, digest = _lines(path)
    out = Reviews([], [], [], [], digest)
    for lineno, text in lines:
        try:
            rec = _record(text)
            user, item = rec.get("reviewerID"), rec.get("asin")
            for name, v in (("reviewerID", user), ("asin", item)):
                if not isinstance(v, str) or not v:
                    raise ValueError(f"field {name!r}: expected a non-empty string, got {v!r}")
            rating = rec.get("overall")
            ts = rec.get("unixReviewTime")
            rating = None if rating is None else float(rating)
            if rating is not None and not math.isfinite(rating):
                raise ValueError(f"field 'overall': expected a finite number, got {rec.get('overall')!r}")
            ts = None if ts is None else int(ts)
            if ts is not None and not INT64_MIN <= ts <= INT64_MAX:
                raise ValueError(f"field 'unixReviewTime': {ts} is beyond the 64-bit integer range")
        except (ValueError, TypeError, OverflowError) as exc:
            if on_bad_lines == "error":
                raise InputError(f"{path}:{lineno}: {exc}") from None
            out.skipped_lines += 1
            continue
        out.users.append(str(user))  # checked above: non-empty strings
        out.items.append(str(item))
        out.ratings.append(rating)
        out.timestamps.append(ts)
    if not out.users:
        raise InputError(f"{path}: no reviews; expected JSON lines with reviewerID and asin")
    return out


def read_meta(path: str | Path, wanted: set[str] | None = None, *, on_bad_lines: str = "error") -> Meta:
    """Item fields by ASIN, for the ASINs in ``wanted`` (all when None)."""
    path = Path(path)
    lines, digest = _lines(path)
    meta = Meta({}, digest, {"meta_malformed_lines_skipped": 0})
    for lineno, text in lines:
        m = _ASIN.search(text)
        if m and wanted is not None and m.group(1) not in wanted:
            continue
        try:
            rec = _record(text)
            asin = rec.get("asin")
            if not isinstance(asin, str) or not asin:
                raise ValueError(f"field 'asin': expected a non-empty string, got {asin!r}")
        except ValueError as exc:
            if on_bad_lines == "error":
                raise InputError(f"{path}:{lineno}: {exc}") from None
            meta.stats["meta_malformed_lines_skipped"] += 1
            continue
        if wanted is None or asin in wanted:
            meta.by_asin[asin] = item_fields(rec)
    return meta


def item_fields(rec: dict) -> dict:
    """A 2014 or 2018 metadata record to the items contract's fields."""
    image = rec.get("imUrl")
    if not image:
        images = rec.get("image") or rec.get("imageURLHighRes") or []
        image = images[0] if isinstance(images, list) and images else None
    desc = rec.get("description")
    if isinstance(desc, list):
        desc = "\n".join(str(d) for d in desc if d) or None
    genres: list[str] = []
    cats = rec.get("categories") or rec.get("category") or []
    for c in cats if isinstance(cats, list) else [cats]:
        for g in c if isinstance(c, list) else [c]:
            if isinstance(g, str) and g and g not in genres:
                genres.append(g)
    title = rec.get("title")
    return {
        "title": str(title) if title else None,
        "year": None,
        "genres": genres or None,
        "imdb_id": None,
        "image_url": str(image) if image else None,
        "description": str(desc) if desc else None,
        "metadata_exact": True,
    }
