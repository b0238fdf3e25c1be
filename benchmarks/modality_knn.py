"""Benchmark: which modality carries the content signal? Content kNN with the poster only, the
plot only and both, on the full, sparse and cold splits of benchmarks.content.

    python -m benchmarks.modality_knn --data ../shared/data
    python -m benchmarks.modality_knn --settings cold --weights 0,0.25,0.5,0.75,1

Content kNN (mmiris/models/content_knn.py) needs no training, so it isolates what the features
themselves say: ``image_weight`` w is the share of the poster cosine in c_i·c_j (1 = poster
only, 0 = plot only, 0.5 = the default mix). If both together do not beat the better one alone
where content is all a model has (cold items), the multimodal claim has nothing to build on.

One row per (setting, w): sampled (99 negatives) and full-ranking HR/NDCG@10, and validation
HR@10 (on the cold split the validation rows are warm items). Each finished row goes to the
results file at once (a temp file + rename) and a rerun skips rows already there (unless
``--rerun``). Last line: ``{"rows": [...]}``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import time
from pathlib import Path

from benchmarks.content import derived_splits
from benchmarks.ml1m import missing_data, prepare
from benchmarks.results_io import write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "modality_knn.json"
SETTINGS = ("full", "sparse", "cold")

log = logging.getLogger("benchmarks.modality_knn")


def row_key(setting: str, weight: float) -> str:
    return f"{setting}/image_weight={weight:g}"


def parse_weights(text: str) -> list[float]:
    try:
        weights = [float(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise SystemExit(
            f"benchmarks.modality_knn: --weights {text!r}: expected numbers in [0, 1], e.g. 0,0.5,1"
        ) from None
    bad = [w for w in weights if not 0.0 <= w <= 1.0]
    if bad or not weights:
        raise SystemExit(f"benchmarks.modality_knn: --weights {text!r}: every weight must be in [0, 1]")
    return weights


def save(path: Path, rows: dict[str, dict]) -> dict:
    return write_json(path, {"rows": sorted(rows.values(), key=lambda r: r["key"])})


def run_row(store, split_ref: str, refs: dict, weight: float) -> dict:
    from mmiris.pipelines.evaluate import evaluate_model, read_metrics
    from mmiris.pipelines.train import train_model

    t0 = time.perf_counter()
    ref = train_model(
        store,
        split_ref,
        "content_knn",
        model_config={"image_weight": weight},
        image_features=refs["image"],
        text_features=refs["text"],
    )
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    met = read_metrics(store, evaluate_model(store, ref, protocols=("sampled", "full")))
    m = store.manifest(ref)
    return {
        "image_weight": weight,
        "hr10": met["sampled"]["hr10"],
        "ndcg10": met["sampled"]["ndcg10"],
        "full_hr10": met["full"]["hr10"],
        "full_ndcg10": met["full"]["ndcg10"],
        "valid_hr10": m.stats.get("valid_hr10"),
        "fit_seconds": round(fit_s, 1),
        "evaluate_seconds": round(time.perf_counter() - t0, 1),
        "model_ref": str(ref),
        "split": split_ref,
        "features": {"image_features": refs["image"], "text_features": refs["text"]},
        "date": dt.date.today().isoformat(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.modality_knn", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--store", default=os.environ.get("MMIRIS_STORE", str(ROOT / "mmiris-store")))
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument("--settings", default=",".join(SETTINGS), help=f"comma list of {SETTINGS}")
    p.add_argument("--weights", default="0,0.5,1", help="image_weight values: 1 = poster only, 0 = plot only")
    p.add_argument("--keep", type=float, default=0.2, help="sparse setting: share of training interactions kept")
    p.add_argument("--cold-items", type=float, default=0.1, help="cold setting: share of items held out")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--rerun", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    settings = [s for s in args.settings.split(",") if s]
    bad = [s for s in settings if s not in SETTINGS]
    if bad:
        print(f"benchmarks.modality_knn: unknown setting(s) {bad}; expected some of {SETTINGS}", file=sys.stderr)
        return 2
    weights = parse_weights(args.weights)
    data = Path(args.data)
    if missing_data(data, "benchmarks.modality_knn"):
        return 2
    refs = prepare(args.store, data, ["content_knn"], ("efficientnet-lite0", "minilm"))
    from mmiris.artifacts import ArtifactStore

    store = ArtifactStore(args.store)
    splits = derived_splits(store, refs["split"], args.keep, args.cold_items, args.split_seed)
    results = Path(args.results)
    done = {r["key"]: r for r in (json.loads(results.read_text())["rows"] if results.exists() else [])}
    todo = [(s, w) for s in settings for w in weights if args.rerun or row_key(s, w) not in done]
    log.info("modality_knn: %d rows to run", len(todo))
    t0 = time.perf_counter()
    for n, (setting, w) in enumerate(todo):
        key = row_key(setting, w)
        row = {"key": key, "setting": setting, **run_row(store, splits[setting], refs, w)}
        done[key] = row
        save(results, done)
        el = time.perf_counter() - t0
        log.info(
            "modality_knn: row %d/%d %s: HR@10 %.4f (%.0f s; ETA %.0f s)",
            n + 1,
            len(todo),
            key,
            row["hr10"],
            el,
            el / (n + 1) * (len(todo) - n - 1),
        )
        print(json.dumps(row), flush=True)
    print(json.dumps({"rows": sorted(done.values(), key=lambda r: r["key"])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
