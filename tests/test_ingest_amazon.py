"""Amazon 2014 (Python-literal meta) and 2018 (JSON, image lists) ingestion with k-core."""

import gzip
import json

import numpy as np
import pytest

from mmiris.errors import InputError
from mmiris.ingest.kcore import kcore_mask
from mmiris.pipelines.ingest import ingest_amazon


def reviews_grid(n_users=6, n_items=6, extra=()):
    """Every user reviews every item (a 6-core), plus ``extra`` (user, asin) pairs."""
    rows = [(f"U{u}", f"B{i:03d}") for u in range(n_users) for i in range(n_items)]
    return rows + list(extra)


def write_gz(path, lines):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
    return path


def review_json(user, asin, t=1252800000):
    return json.dumps(
        {
            "reviewerID": user,
            "asin": asin,
            "reviewerName": "X",
            "overall": 4.0,
            "unixReviewTime": t,
            "reviewText": "fine",
        }
    )


def test_2014_reviews_python_literal_meta_and_kcore(store, tmp_path):
    # "Z1" reviews only 2 items and "B999" has 1 review: both gone in the 5-core;
    # a duplicate review is counted once.
    pairs = reviews_grid(extra=[("Z1", "B000"), ("Z1", "B999"), ("U0", "B000")])
    reviews = write_gz(
        tmp_path / "reviews_Toys.json.gz", [review_json(u, a, 1000 + k) for k, (u, a) in enumerate(pairs)]
    )
    meta_lines = [
        repr(
            {
                "asin": f"B{i:03d}",
                "title": f"Toy {i}",
                "imUrl": f"http://img/{i}.jpg",
                "description": "It's a toy",
                "categories": [["Toys", "Dolls"], ["Toys", "Kids"]],
                "salesRank": {"Toys": i},
            }
        )
        for i in range(5)
    ]
    meta = write_gz(tmp_path / "meta_Toys.json.gz", meta_lines + [repr({"asin": "B999", "title": "gone"})])
    res = ingest_amazon(store, reviews, meta, kcore=5)
    inter = store.read_table(res.interactions, "interactions")
    assert inter.num_rows == 36
    stats = store.manifest(res.interactions).stats
    assert stats["duplicates_dropped"] == 1 and stats["kcore_users_removed"] == 1
    assert stats["kcore_items_removed"] == 1 and stats["kcore_interactions_removed"] == 2
    items = {r["source_id"]: r for r in store.read_table(res.items).to_pylist()}
    assert sorted(items) == [f"B{i:03d}" for i in range(6)]
    assert items["B001"]["image_url"] == "http://img/1.jpg" and items["B001"]["title"] == "Toy 1"
    assert items["B001"]["genres"] == ["Toys", "Dolls", "Kids"]
    assert items["B001"]["description"] == "It's a toy"
    assert items["B005"]["title"] is None  # no meta line: counted, not dropped
    assert store.manifest(res.items).stats["items_without_metadata"] == 1
    users = store.read_table(res.interactions, "users").column("source_id").to_pylist()
    assert users == [f"U{u}" for u in range(6)]


def test_2018_json_meta_with_image_lists(store, tmp_path):
    reviews = write_gz(
        tmp_path / "Toys.json.gz",
        [
            json.dumps(
                {
                    "overall": 5.0,
                    "verified": True,
                    "reviewerID": u,
                    "asin": a,
                    "unixReviewTime": 1500000000,
                    "image": ["http://user-photo"],
                }
            )
            for u, a in reviews_grid()
        ],
    )
    meta = write_gz(
        tmp_path / "meta_Toys.json.gz",
        [
            json.dumps(
                {
                    "asin": "B000",
                    "title": "Blocks",
                    "image": ["http://a.jpg", "http://b.jpg"],
                    "description": ["Wooden.", "For kids."],
                    "category": ["Toys", "Blocks"],
                }
            ),
        ],
    )
    res = ingest_amazon(store, reviews, meta)
    items = {r["source_id"]: r for r in store.read_table(res.items).to_pylist()}
    assert items["B000"]["image_url"] == "http://a.jpg"
    assert items["B000"]["description"] == "Wooden.\nFor kids."
    assert items["B000"]["genres"] == ["Toys", "Blocks"]


def test_kcore_reaches_the_fixed_point_of_a_slow_reference():
    rng = np.random.default_rng(0)
    pairs = {(int(u), int(i)) for u, i in zip(rng.integers(0, 60, 700), rng.zipf(1.6, 700) % 80)}
    user = np.array([p[0] for p in pairs])
    item = np.array([p[1] for p in pairs])
    keep, iterations = kcore_mask(user, item, 5)

    alive = set(pairs)
    while True:  # obviously correct: recount everything, drop, repeat
        uc, ic = {}, {}
        for u, i in alive:
            uc[u] = uc.get(u, 0) + 1
            ic[i] = ic.get(i, 0) + 1
        nxt = {(u, i) for u, i in alive if uc[u] >= 5 and ic[i] >= 5}
        if nxt == alive:
            break
        alive = nxt
    assert set(zip(user[keep].tolist(), item[keep].tolist())) == alive
    assert iterations > 1 and 0 < len(alive) < len(pairs)


def test_bad_review_lines(store, tmp_path):
    lines = [review_json(u, a) for u, a in reviews_grid()]
    bad = write_gz(tmp_path / "r.json.gz", lines[:3] + ["{not json at all"] + lines[3:])
    with pytest.raises(InputError, match=r"r.json.gz:4: not a JSON object nor a Python literal dict"):
        ingest_amazon(store, bad)
    missing = write_gz(tmp_path / "m.json.gz", lines[:1] + [json.dumps({"asin": "B1", "overall": 3})])
    with pytest.raises(InputError, match=r"m.json.gz:2: field 'reviewerID': expected a non-empty string"):
        ingest_amazon(store, missing)
    assert store.names() == []
    res = ingest_amazon(store, bad, on_bad_lines="skip")
    assert store.manifest(res.interactions).stats["malformed_lines_skipped"] == 1
    truncated = tmp_path / "t.json.gz"
    truncated.write_bytes((tmp_path / "r.json.gz").read_bytes()[:40])
    with pytest.raises(InputError, match=r"t.json.gz: corrupt gzip data"):
        ingest_amazon(store, truncated)
    with pytest.raises(InputError, match=r"no interactions left after 50-core"):
        ingest_amazon(store, tmp_path / "r.json.gz", kcore=50, on_bad_lines="skip")
