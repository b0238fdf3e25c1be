"""Benchmark: ingest the ML-1M NCF split with its metadata, and check it against the files.

    python -m benchmarks.ingest_ml1m [--data ../shared/data] [--no-metadata] [--store DIR]

Reads ``<data>/ml-1m-ncf/ml-1m.{train.rating,test.rating,test.negative}``, joins
``items.tsv`` with ``<data>/ml-1m/movies.dat`` and ``links.csv`` (``--no-metadata`` skips the
join, the option that shortens a run), into a fresh temporary store (or ``--store``).
Then checks what the issue's "done when" names: 994,169 + 6,040 interactions, items with
titles and genres, and test negatives equal to the file's (parsed here independently of the
reader). Ingesting the same files a second time is timed too (found in the store, not
re-parsed). The last line is one JSON object: ``interactions``, ``users``, ``items``,
``test_users``, ``seconds``, ``peak_rss_mb`` and the checks. Exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _file_negatives(path: Path) -> dict[int, tuple[int, list[int]]]:
    """The negatives file parsed the simplest way: user -> (test item, negatives)."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            head, *negs = line.rstrip("\t").split("\t")
            u, i = head.strip("()").split(",")
            out[int(u)] = (int(i), [int(x) for x in negs])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ingest_ml1m", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data",
        default=str(ROOT.parent / "shared" / "data"),
        help="benchmark data folder (default ../shared/data from the project root)",
    )
    p.add_argument("--store", default=None, help="artifact store (default: a fresh temporary folder)")
    p.add_argument("--no-metadata", action="store_true", help="skip items.tsv/movies.dat/links.csv")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )

    data = Path(args.data)
    ncf_dir, ml_dir = data / "ml-1m-ncf", data / "ml-1m"
    needed = [ncf_dir / f"ml-1m.{s}" for s in ("train.rating", "test.rating", "test.negative")]
    if not args.no_metadata:
        needed += [ncf_dir / "items.tsv", ml_dir / "movies.dat", ml_dir / "links.csv"]
    missing = [str(f) for f in needed if not f.exists()]
    if missing:
        print(
            f"ingest_ml1m benchmark: data not found: {', '.join(missing)} "
            f"(pass --data pointing at the folder holding ml-1m-ncf/ and ml-1m/)",
            file=sys.stderr,
        )
        return 2

    from mmiris.artifacts import ArtifactStore
    from mmiris.pipelines.ingest import ingest_ncf

    meta = (
        {}
        if args.no_metadata
        else dict(item_map=ncf_dir / "items.tsv", movies=ml_dir / "movies.dat", links=ml_dir / "links.csv")
    )
    with tempfile.TemporaryDirectory(prefix="mmiris-bench-") as tmp:
        store = ArtifactStore(args.store or Path(tmp) / "store")
        rss_before = _rss_mb()
        t0 = time.perf_counter()
        res = ingest_ncf(store, *needed[:3], seed=args.seed, **meta)
        seconds = time.perf_counter() - t0
        peak = _rss_mb()
        t1 = time.perf_counter()
        again = ingest_ncf(store, *needed[:3], seed=args.seed, **meta)
        seconds_cached = time.perf_counter() - t1
        from mmiris.data.split import load_split  # imports torch: after the memory reading

        inter_stats = store.manifest(res.interactions).stats
        items = store.read_table(res.items)
        split = load_split(store, res.split)
        split_stats = store.manifest(res.split).stats
        given = _file_negatives(needed[2])
        negatives_equal = len(given) == len(split.test_users) and all(
            given[int(u)] == (int(i), negs.tolist())
            for u, i, negs in zip(split.test_users, split.test_items, split.test_negatives)
        )
        train_lines = sum(1 for line in needed[0].read_text().splitlines() if line.strip())
        test_lines = sum(1 for line in needed[1].read_text().splitlines() if line.strip())
        titles = int(items.num_rows - items.column("title").null_count)
        genres = int(items.num_rows - items.column("genres").null_count)
        imdb = int(items.num_rows - items.column("imdb_id").null_count)
        checks = {
            "interactions_equal_train_plus_test": inter_stats["n_interactions"] == train_lines + test_lines,
            "test_negatives_equal_file": bool(negatives_equal),
            "items_have_titles_and_genres": args.no_metadata or (titles > 0 and genres > 0),
            "second_ingest_found_same_versions": again == res,
        }
        result = {
            "interactions": int(inter_stats["n_interactions"]),
            "train_interactions": train_lines,
            "test_interactions": test_lines,
            "users": int(inter_stats["n_users"]),
            "items": int(items.num_rows),
            "test_users": int(len(np.unique(split.test_users))),
            "valid_users": int(len(split.valid_users)),
            "items_with_title": titles,
            "items_with_genres": genres,
            "items_with_imdb_id": imdb,
            "items_metadata_inexact": int(store.manifest(res.items).stats.get("items_metadata_inexact", 0)),
            "test_item_in_negatives": int(split_stats["test_item_in_negatives"]),
            "seconds": round(seconds, 3),
            "seconds_second_ingest": round(seconds_cached, 3),
            "peak_rss_mb": round(peak, 1),  # of the whole process, up to the end of the ingest
            "rss_before_ingest_mb": round(rss_before, 1),  # after imports
            "refs": [str(r) for r in res.refs()],
            "checks": checks,
        }
    print(json.dumps(result))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
