"""Benchmark: does a trained Hybrid IRIS add to content kNN on cold items? (a score blend)

    python -m benchmarks.cold_blend --store STORE --split split_cold@V --model model-hybrid_iris@V

On the cold-item split content kNN (no training) ranks held-out items better than Hybrid
IRIS. That alone does not say whether the learned model knows anything the plain content
similarity does not. This benchmark blends the two, s = w·z_hybrid + (1 − w)·z_knn, where z
is each model's score standardised over a case's candidates (mean 0, std 1 per case, so
the two scales mix). It picks w on the validation cases and reports the test cases at that
w. The validation cases are the split's warm items, scored as new items (the hybrid's free
target rows are zeroed, as `select_on: cold` does), so no cold test item is read when w is
chosen. w = 0 is content kNN's own ranking and w = 1 the hybrid's: the ends of the curve
reproduce each model's evaluate-stage HR@10, and a peak inside means the two rankings carry
different signal. Warm items scored as new items turn out to favour the hybrid far more than
cold items do, so the row also has a cross-fitted figure (``cross_fit``, ``--folds``): the
cold test items are dealt into folds, each fold is scored at the w that is best on the other
folds' items, and the pooled ranks give HR/NDCG@10 over every test case. No case is scored
at a w its own item helped choose; the model never saw any cold item. On a split made with
``mmiris split --cold-valid`` the validation items are themselves held out of training, so
``chosen_w`` is already chosen on cold items (the zeroing is then a no-op).

On a split that is not a cold-item one (``--split split``, a full-split model) the same blend
asks whether content kNN adds to the model on warm items: validation is scored as it is (its
items are as warm as the test items), w is chosen there, and there is no cross-fitting.

``--knn`` defaults to content kNN (image weight 0.5) over the features the hybrid read,
fitted on the split (or found in the store). The protocol is the sampled one of the evaluate
stage (99 cold negatives per cold test case); nothing else is published.

Prints one JSON line ``{"model", "knn", "split", "chosen_w", "test", "cross_fit", "curve"}``
(each curve point has the validation and test HR/NDCG@10 at one w) and writes it, keyed by
the hybrid model, to ``--out`` (a rerun for the same model replaces its entry).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.results_io import finish, write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "cold_blend.json"

log = logging.getLogger("benchmarks.cold_blend")


def parse_grid(text: str) -> list[float]:
    """``0:1:0.1`` (start:stop:step, both ends in) or a comma list, every value in [0, 1]."""
    try:
        if ":" in text:
            a, b, step = (float(v) for v in text.split(":"))
            if step <= 0:
                raise ValueError
            grid = [round(v, 6) for v in np.arange(a, b + step / 2, step)]
        else:
            grid = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(
            f"benchmarks.cold_blend: --weights {text!r}: expected start:stop:step (e.g. 0:1:0.1) "
            f"or a comma list of numbers in [0, 1]"
        ) from None
    if not grid or any(not 0.0 <= w <= 1.0 for w in grid):
        raise SystemExit(f"benchmarks.cold_blend: --weights {text!r}: every weight must be in [0, 1]")
    return grid


def standardise(scores: np.ndarray, counted: np.ndarray) -> np.ndarray:
    """Each case's scores minus their mean, over their std (over the held-out item and the
    counted negatives; a case whose scores are all equal gets zeros): ``standardise_rows``,
    the z-score ``mmiris recommend --knn-share`` blends with, per case."""
    import torch

    from mmiris.recommend.topn import standardise_rows

    mask = np.concatenate([np.ones((len(scores), 1), bool), counted], axis=1)
    return standardise_rows(torch.from_numpy(np.asarray(scores)), torch.from_numpy(mask)).numpy()


def blend_ranks(hybrid, knn, grid: list[float]) -> np.ndarray:
    """Per w in ``grid``, every case's 0-based rank of its held-out item under
    w·z_hybrid + (1 − w)·z_knn: ``[len(grid), n_cases]``. ``hybrid`` and ``knn`` are
    ``CaseScores`` of the same cases."""
    if not (np.array_equal(hybrid.users, knn.users) and np.array_equal(hybrid.items, knn.items)):
        raise ValueError("cold_blend: the two models were scored on different cases")
    zh, zk = standardise(hybrid.scores, hybrid.counted), standardise(knn.scores, knn.counted)
    return np.stack([hybrid.ranks(w * zh + (1.0 - w) * zk) for w in grid])


def _hr_ndcg(ranks: np.ndarray) -> dict[str, float]:
    from mmiris.eval.metrics import metrics_from_ranks

    met = metrics_from_ranks(ranks)
    return {"hr10": round(float(met["hr10"]), 4), "ndcg10": round(float(met["ndcg10"]), 4)}


def blend_curve(hybrid, knn, grid: list[float]) -> list[dict]:
    """HR/NDCG@10 of w·z_hybrid + (1 − w)·z_knn for every w in ``grid``."""
    return _curve(blend_ranks(hybrid, knn, grid), grid)


def _curve(ranks: np.ndarray, grid: list[float]) -> list[dict]:
    return [{"w": w, **_hr_ndcg(r)} for w, r in zip(grid, ranks)]


def cross_fit(hybrid, knn, grid: list[float], folds: int, seed: int = 0) -> dict:
    """w chosen on cold items, never on the items it is scored on: the test cases' held-out
    items are dealt into ``folds`` groups (a seeded permutation); each group's cases are
    ranked at the w that is best (HR@10, then NDCG@10) on the other groups' cases, and the
    pooled ranks give HR/NDCG@10 over every test case. Each fold's w and its own figure are
    listed too."""
    return _cross_fit(blend_ranks(hybrid, knn, grid), hybrid.items, grid, folds, seed)


def _cross_fit(ranks: np.ndarray, case_items: np.ndarray, grid: list[float], folds: int, seed: int) -> dict:
    """``cross_fit`` on the blend's ranks ``[len(grid), n_cases]`` already computed."""
    if folds < 2:
        raise ValueError(f"cold_blend: --folds {folds}: cross-fitting needs at least 2 folds")
    items = np.unique(case_items)
    if len(items) < folds:
        raise ValueError(f"cold_blend: --folds {folds}: the test cases hold only {len(items)} items")
    fold_of = np.empty(len(items), np.int64)  # by position in ``items``
    fold_of[np.searchsorted(items, np.random.default_rng(seed).permutation(items))] = np.arange(len(items)) % folds
    case_fold = fold_of[np.searchsorted(items, case_items)]
    pooled = np.empty(ranks.shape[1], ranks.dtype)
    per_fold = []
    for f in range(folds):
        rest, mine = case_fold != f, case_fold == f
        scored = [_hr_ndcg(r[rest]) for r in ranks]
        best = max(range(len(grid)), key=lambda i: (scored[i]["hr10"], scored[i]["ndcg10"]))
        pooled[mine] = ranks[best][mine]
        per_fold.append({"fold": f, "cases": int(mine.sum()), "w": grid[best], **_hr_ndcg(ranks[best][mine])})
    return {"folds": folds, "seed": seed, "test": _hr_ndcg(pooled), "per_fold": per_fold}


def load_on_split(store, split_full: str, ref: str, history, label: str = ""):
    """Model ``ref``, refused unless it was trained on split ``split_full``, with ``history``
    set (``label`` prefixes the refusal, e.g. the flag that named it)."""
    from mmiris.errors import MmirisError
    from mmiris.models.build import load_model

    parents = store.manifest(ref).parents
    if split_full not in parents:
        raise MmirisError(f"{label}{ref} was not trained on --split {split_full} (its inputs: {', '.join(parents)})")
    model = load_model(store, ref)
    model.set_history(history)
    return model


def run(
    store, split_ref: str, model_ref: str, knn_ref: str | None, grid: list[float], folds: int = 2, seed: int = 0
) -> dict:
    from mmiris.data.split import load_split
    from mmiris.errors import InputError, MmirisError
    from mmiris.eval.protocols import sampled_scores
    from mmiris.models.base import targets_as_new
    from mmiris.pipelines.recommend import content_knn_for

    split = load_split(store, split_ref)
    split_full = str(store.manifest(split_ref).ref)
    if knn_ref is None:
        try:
            knn_ref = str(content_knn_for(store, split_full, model_ref))
        except InputError as exc:
            raise MmirisError(f"{exc}; pass --knn") from None
    history = split.history()
    models = {
        role: load_on_split(store, split_full, ref, history, f"--{role} ")
        for role, ref in (("model", model_ref), ("knn", knn_ref))
    }
    cold = store.manifest(split_full).stats.get("setting") == "cold"
    t0 = time.perf_counter()
    # validation on a cold split: warm items scored as new items; elsewhere as they are, like the test items
    with targets_as_new(models["model"]) if cold else contextlib.nullcontext():
        valid_h = sampled_scores(models["model"], split.valid_users, split.valid_items, split.valid_negatives)
    valid_k = sampled_scores(models["knn"], split.valid_users, split.valid_items, split.valid_negatives)
    log.info("cold_blend: %d validation cases scored (%.0f s)", len(split.valid_users), time.perf_counter() - t0)
    t0 = time.perf_counter()
    test = {
        role: sampled_scores(m, split.test_users, split.test_items, split.test_negatives) for role, m in models.items()
    }
    log.info("cold_blend: %d test cases scored (%.0f s)", len(split.test_users), time.perf_counter() - t0)
    valid_curve = blend_curve(valid_h, valid_k, grid)
    test_ranks = blend_ranks(test["model"], test["knn"], grid)  # the curve and the cross-fit read these
    test_curve = _curve(test_ranks, grid)
    best = max(range(len(grid)), key=lambda i: (valid_curve[i]["hr10"], valid_curve[i]["ndcg10"]))
    return {
        "model": model_ref,
        "knn": knn_ref,
        "split": split_ref,
        "valid_cases": len(split.valid_users),
        "test_cases": len(split.test_users),
        "chosen_w": grid[best],
        "test": {k: test_curve[best][k] for k in ("hr10", "ndcg10")},
        "setting": "cold" if cold else store.manifest(split_full).stats.get("setting", "full"),
        # on a warm split validation is like the test cases, so its w needs no cross-fitting
        "cross_fit": _cross_fit(test_ranks, test["model"].items, grid, folds, seed) if cold else None,
        "curve": [
            {"w": w, "valid_hr10": v["hr10"], "valid_ndcg10": v["ndcg10"], "hr10": t["hr10"], "ndcg10": t["ndcg10"]}
            for w, v, t in zip(grid, valid_curve, test_curve)
        ],
        "date": dt.date.today().isoformat(),
    }


def save(path: Path, row: dict) -> dict:
    """Add or replace ``row`` (keyed by its hybrid model) in the results file, atomically."""
    rows = {r["model"]: r for r in (json.loads(path.read_text())["rows"] if path.exists() else [])}
    rows[row["model"]] = row
    return write_json(path, {"rows": sorted(rows.values(), key=lambda r: r["model"])})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cold_blend", description=__doc__.split("\n\n")[0])
    p.add_argument("--store", default=os.environ.get("MMIRIS_STORE", str(ROOT / "mmiris-store")))
    p.add_argument("--split", required=True, help="a cold-item split")
    p.add_argument("--model", required=True, help="a hybrid_iris (or other new-item) model trained on it")
    p.add_argument(
        "--knn", default=None, help="a content_knn model on the same split (default: fitted on the model's features)"
    )
    p.add_argument("--weights", default="0:1:0.1", help="w grid: start:stop:step or a comma list")
    p.add_argument(
        "--folds", type=int, default=2, help="cold-item folds for the cross-fitted w (at least 2; default 2)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the cold-item folds")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    grid = parse_grid(args.weights)
    from mmiris.artifacts import ArtifactStore

    return finish(
        "benchmarks.cold_blend",
        lambda: run(ArtifactStore(args.store), args.split, args.model, args.knn, grid, args.folds, args.seed),
        save,
        args.out,
    )


if __name__ == "__main__":
    sys.exit(main())
