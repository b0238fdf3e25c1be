"""The tables a crawl publishes, built from its per-item rows (the stage: mmiris.pipelines.crawl).

``read_items`` turns an ``items`` artifact into the crawl's work list; the chunk functions
(omdb.py, amazon.py) return one row per item; ``omdb_tables`` and ``images_table`` make the
``item_text`` and ``item_images`` tables (schemas/item_text.json, item_images.json) with the
counts that go into the manifests' stats, ``run_info`` the run's figures for ``info``.
"""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa

from mmiris.artifacts import ArtifactRef, ArtifactStore
from mmiris.artifacts.schema import load_contract
from mmiris.crawl.cache import open_cache
from mmiris.crawl.fetcher import Counters
from mmiris.crawl.parallel import CrawlIncomplete


def read_items(store: ArtifactStore, items_ref: ArtifactRef, links: dict[str, str] | None) -> list[dict]:
    """The crawl's work list: one dict per item, IMDb ids from the items or ``links``."""
    t = store.read_table(items_ref, "items", columns=["item_id", "source_id", "title", "year", "imdb_id", "image_url"])
    items = []
    for r in t.to_pylist():
        imdb = r["imdb_id"] or (links or {}).get(str(r["source_id"]))
        items.append(
            {
                "item_id": int(r["item_id"]),
                "title": r["title"],
                "year": r["year"],
                "imdb_id": imdb,
                "image_url": r["image_url"],
            }
        )
    items.sort(key=lambda it: it["item_id"])
    return items


def check_complete(failed: list[tuple[int, str]], total: int, what: str) -> None:
    """Raise CrawlIncomplete (nothing is published) when some items still failed."""
    if failed:
        sample = "; ".join(f"item {i}: {msg}" for i, msg in failed[:3])
        raise CrawlIncomplete(
            f"{what}: {len(failed)} of {total} items still failed after every retry (e.g. {sample}); "
            "nothing published; re-run to retry only those (all other answers are cached)"
        )


def _na(v):
    return None if v in (None, "", "N/A") else str(v)


def omdb_tables(rows: list[dict], posters: bool) -> tuple[pa.Table, pa.Table, dict]:
    """(item_text, item_images, stats) from the OMDb chunk rows."""
    text_cols: dict[str, list] = {k: [] for k in load_contract("item_text").table("item_text").column_names()}
    matched_by: Counter = Counter()
    unmatched: Counter = Counter()
    for r in rows:
        rec = r["record"] or {}
        plot = _na(rec.get("Plot"))
        if r["matched"]:
            matched_by[r["method"]] += 1
            reason = None if plot else "no_plot"
        else:
            unmatched[r["reason"]] += 1
            reason = f"no_match:{r['reason']}"
        text_cols["item_id"].append(r["item_id"])
        text_cols["text"].append(plot if r["matched"] else None)
        text_cols["present"].append(bool(r["matched"] and plot))
        text_cols["reason"].append(reason)
        for col, fld in (
            ("title", "Title"),
            ("genre", "Genre"),
            ("director", "Director"),
            ("actors", "Actors"),
            ("year", "Year"),
            ("imdb_id", "imdbID"),
        ):
            text_cols[col].append(_na(rec.get(fld)))
        text_cols["match_method"].append(r["method"])
        text_cols["raw_json"].append(r["raw"])
    text = pa.table({k: pa.array(v, type=_TEXT_TYPES.get(k, pa.string())) for k, v in text_cols.items()})
    image_rows: list[tuple[int, bytes | None, str | None]] = []
    for r in rows:
        if not r["matched"]:
            image_rows.append((r["item_id"], None, f"no_match:{r['reason']}"))
        elif not posters:
            image_rows.append((r["item_id"], None, "posters_not_crawled"))
        else:
            image_rows.append((r["item_id"], r["image"], None))
    images = images_table(image_rows)
    text_missing = Counter(x for x in text_cols["reason"] if x)
    stats = {
        "movies": len(rows),
        "matched": sum(matched_by.values()),
        "matched_by": dict(sorted(matched_by.items())),
        "unmatched_by_reason": dict(sorted(unmatched.items())),
        "match_rate": round(sum(matched_by.values()) / len(rows), 4) if rows else 0.0,
        "text_present": sum(text_cols["present"]),
        "text_missing_by_reason": dict(sorted(text_missing.items())),
    }
    stats.update({f"images_{k}": v for k, v in image_stats(images).items()})
    return text, images, stats


_TEXT_TYPES = {"item_id": pa.int64(), "present": pa.bool_()}


def images_table(image_rows) -> pa.Table:
    """The ``item_images`` table from (item_id, fetch result or None, reason) tuples."""
    cols: dict[str, list] = {
        k: [] for k in ("item_id", "image", "present", "reason", "sha256", "width", "height", "format", "source_url")
    }
    for item_id, res, reason in image_rows:
        cols["item_id"].append(item_id)
        ok = res is not None and res.present
        cols["image"].append(res.data if ok else None)
        cols["present"].append(ok)
        cols["reason"].append(None if ok else (reason or res.reason))
        info = res.info if ok else None
        cols["sha256"].append(info.sha256 if info else None)
        cols["width"].append(info.width if info else None)
        cols["height"].append(info.height if info else None)
        cols["format"].append(info.format if info else None)
        cols["source_url"].append(res.source_url if res is not None else None)
    types = {
        "item_id": pa.int64(),
        "image": pa.binary(),
        "present": pa.bool_(),
        "width": pa.int32(),
        "height": pa.int32(),
    }
    return pa.table({k: pa.array(v, type=types.get(k, pa.string())) for k, v in cols.items()})


def image_stats(images: pa.Table) -> dict:
    present = images.column("present").to_pylist()
    reasons = Counter(r for r in images.column("reason").to_pylist() if r)
    formats = Counter(f for f in images.column("format").to_pylist() if f)
    return {
        "items": images.num_rows,
        "present": sum(present),
        "missing_by_reason": dict(sorted(reasons.items())),
        "formats": dict(sorted(formats.items())),
    }


def matches_jsonl(rows: list[dict]) -> bytes:
    """``files/matches.jsonl`` of item_text: how each item was matched (or why not)."""
    lines = [
        json.dumps(
            {
                "item_id": r["item_id"],
                "matched": r["matched"],
                "method": r["method"],
                "query": r["query"],
                "score": r["score"],
                "reason": r["reason"],
                "lookups": r["tried"],
            },
            sort_keys=True,
            ensure_ascii=False,
        )
        for r in rows
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


def run_info(counters: Counters, seconds: float, rate_per_s, cache_dir, daily_quota) -> dict:
    info = counters.as_dict()
    info.update(
        {
            "seconds": round(seconds, 3),
            "requests_per_s": round(counters.sent / seconds, 2) if seconds > 0 else 0.0,
            "rate_limit_per_s": rate_per_s,
            "daily_quota": daily_quota,
            "cache_dir": str(cache_dir),
        }
    )
    try:
        info["api_requests_today"] = open_cache(cache_dir).quota_used()
    except Exception:  # noqa: BLE001 (informational only)
        pass
    return info
