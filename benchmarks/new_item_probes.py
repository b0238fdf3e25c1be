"""Benchmark: three probes of how new items could be ranked better (cold-item splits).

    python -m benchmarks.new_item_probes ensemble   --store STORE --split SPLIT --models A,B,C,D
    python -m benchmarks.new_item_probes pooling    --store STORE --split SPLIT --knn KNN --models A,B
    python -m benchmarks.new_item_probes popularity --store STORE --split SPLIT --knn KNN

Hybrid IRIS ranks a new item j for user u through its similarity path, γ n^-(α+β) Σ_i ĉ_i·ĉ_j:
the learned content similarity, every history item weighted alike (mmiris/models/hybrid_iris.py).
On ML-1M's cold items it sits about 0.028 HR@10 above content kNN, with a seed spread of
0.005–0.009 (docs/content.md). Each probe asks one question of the stored models, with no
training, on the evaluate stage's sampled protocol (each case's held-out item against its
stored negatives, ties against it):

- ``ensemble``: is the path limited by its training noise? The per-case standardised scores
  (``benchmarks.cold_blend.standardise``) of several new-item models trained with different
  seeds are summed; every subset of ``--models`` is a row, and the summary gives the mean over
  the subsets of each size. A sum of similarity paths is itself one similarity path (the
  projections side by side), so a gain here is what averaging independent fits buys.
- ``pooling``: should the history be weighted by its similarity to the candidate (attention
  by content) instead of alike? Each history item's similarity s_ij is pooled as
  Σ_i softmax_i(τ s_ij / σ) s_ij (σ the std of all s over the users' histories and the
  candidates; τ = 0 is the plain mean, which ranks as the model's path and as content kNN do)
  or as the mean of the ``k`` largest s_ij. Sources: content kNN's vectors (``--knn``) and
  each model's ĉ (``--models``: the history side and, with ``content_metric``, the target side).
- ``popularity``: would a popularity prior predicted from content help? A ridge regression
  from the raw features (standardised, with an intercept) to log(1 + training interactions),
  fitted on the items with training interactions that are no validation or test item, predicts
  every item's popularity; the score is (1 − w)·z_knn + w·z_pop, per-case standardised.

Validation cases are scored as new items (``targets_as_new``, as ``select_on: cold`` does;
a no-op on a ``--cold-valid`` split, whose validation items are held out of training). Every
probe reports the whole grid, the setting validation picks (HR@10, then NDCG@10) and the test
figure there. Prints one JSON line and writes it to ``--out`` keyed by probe, split and inputs
(a rerun replaces it).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.cold_blend import _hr_ndcg, load_on_split, standardise
from benchmarks.results_io import finish, write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "new_item_probes.json"
SETS = ("valid", "test")

log = logging.getLogger("benchmarks.new_item_probes")


def _row(ranks: dict[str, np.ndarray], **key) -> dict:
    """One grid point: its key, and validation and test HR/NDCG@10 from each set's ranks."""
    v, t = _hr_ndcg(ranks["valid"]), _hr_ndcg(ranks["test"])
    return {**key, "valid_hr10": v["hr10"], "valid_ndcg10": v["ndcg10"], "hr10": t["hr10"], "ndcg10": t["ndcg10"]}


def _picked(rows: list[dict]) -> dict:
    return max(rows, key=lambda r: (r["valid_hr10"], r["valid_ndcg10"]))


def _candidates(split, which: str) -> np.ndarray:
    items = np.asarray(getattr(split, f"{which}_items"), np.int64)
    neg = np.asarray(getattr(split, f"{which}_negatives"), np.int64)
    return np.concatenate([items[:, None], neg.reshape(len(items), -1)], axis=1)


def _loaded(store, split_full: str, ref: str, history):
    return load_on_split(store, split_full, ref, history).eval()


def case_scores(model, split, which: str):
    """``CaseScores`` of the ``which`` ("valid" or "test") cases; validation as new items."""
    from mmiris.eval.protocols import sampled_scores
    from mmiris.models.base import targets_as_new

    as_new = which == "valid" and type(model).target_rows
    with targets_as_new(model) if as_new else contextlib.nullcontext():
        return sampled_scores(
            model,
            getattr(split, f"{which}_users"),
            getattr(split, f"{which}_items"),
            getattr(split, f"{which}_negatives"),
        )


# -- ensemble -------------------------------------------------------------------------------
def ensemble_rows(scores: list[dict]) -> list[dict]:
    """``scores``: per model, {"valid": CaseScores, "test": CaseScores} of the same cases.
    One row per non-empty subset of the models (``members``: their positions), ranking each case
    by the sum of the members' per-case standardised scores."""
    z = [{s: standardise(m[s].scores, m[s].counted) for s in SETS} for m in scores]
    rows = []
    for size in range(1, len(scores) + 1):
        for members in itertools.combinations(range(len(scores)), size):
            ranks = {s: scores[0][s].ranks(sum(z[k][s] for k in members)) for s in SETS}
            rows.append(_row(ranks, members=list(members)))
    return rows


def ensemble_summary(rows: list[dict]) -> list[dict]:
    """Mean (over the subsets of each size) validation and test HR@10."""
    out = []
    for size in sorted({len(r["members"]) for r in rows}):
        of = [r for r in rows if len(r["members"]) == size]
        out.append(
            {
                "size": size,
                "subsets": len(of),
                "valid_hr10": round(float(np.mean([r["valid_hr10"] for r in of])), 4),
                "hr10": round(float(np.mean([r["hr10"] for r in of])), 4),
            }
        )
    return out


# -- pooling --------------------------------------------------------------------------------
def pooled_scores(
    H: torch.Tensor, T: torch.Tensor, history, users: np.ndarray, cands: np.ndarray, taus, ks, sigma: float
) -> dict[str, np.ndarray]:
    """For each case (``users[c]``, candidates ``cands[c]``), every candidate's pooled
    similarity to the user's history, s_ij = H_i·T_j over i ∈ R_u⁺\\{j}: ``tau<τ>`` the softmax
    pooling Σ_i softmax_i(τ s_ij / σ) s_ij, ``top<k>`` the mean of the k largest s_ij. Cases
    are grouped by user, so each user's history is read once."""
    names = [f"tau{t:g}" for t in taus] + [f"top{k}" for k in ks]
    out = {n: np.zeros(cands.shape, np.float32) for n in names}
    order = np.argsort(users, kind="stable")
    bounds = np.flatnonzero(np.diff(users[order])) + 1
    for idx in np.split(order, bounds):
        if len(idx) == 0:
            continue
        hist = history.items_of(int(users[idx[0]]))
        items, inv = np.unique(cands[idx], return_inverse=True)
        s = H[torch.from_numpy(hist)] @ T[torch.from_numpy(items)].t()  # [L, K]
        own = torch.from_numpy(hist[:, None] == items[None, :])  # i = j: left out, as the path does
        n = len(hist) - own.sum(0)
        pooled = {}
        for t in taus:
            w = torch.softmax((t * s / sigma).masked_fill(own, float("-inf")), 0)
            pooled[f"tau{t:g}"] = torch.where(n > 0, torch.nan_to_num(w * s).sum(0), 0.0)
        ranked = s.masked_fill(own, float("-inf")).sort(0, descending=True).values
        for k in ks:
            top = torch.nan_to_num(ranked[:k], neginf=0.0).sum(0)
            pooled[f"top{k}"] = torch.where(n > 0, top / n.clamp(1, k), 0.0)
        for name, v in pooled.items():
            out[name][idx] = v.numpy()[inv.reshape(len(idx), -1)]
    return out


def pooling_sources(knn, models: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(history-side, target-side) vectors of every item: content kNN's c, each model's ĉ."""
    out = {}
    if knn is not None:
        out["content_knn"] = (knn.C.float(), knn.C.float())
    for ref, m in models.items():
        if getattr(m, "sim_scale", None) is None:
            raise ValueError(f"{ref}: pooling reads the similarity term's ĉ; this model has no such term")
        with torch.no_grad():
            S = m.content_similarity_vectors(torch.arange(m.n_items)).float()
        d = m.config.content_similarity
        out[ref] = (S[:, :d], S[:, d:]) if m.metric_p is not None else (S, S)
    return out


def pooling_rows(split, sources, taus, ks, base: dict) -> list[dict]:
    """One row per source and pooling; ``base`` holds each set's CaseScores (for the negatives
    that count and the ranking)."""
    history = split.history()
    users = {s: np.asarray(getattr(split, f"{s}_users"), np.int64) for s in SETS}
    cands = {s: _candidates(split, s) for s in SETS}
    sample = torch.from_numpy(np.unique(np.concatenate([c.ravel() for c in cands.values()])))
    hist_items = torch.from_numpy(np.unique(history.indices))
    rows = []
    for name, (H, T) in sources.items():
        sigma = float((H[hist_items] @ T[sample].t()).std())
        pooled = {s: pooled_scores(H, T, history, users[s], cands[s], taus, ks, sigma) for s in SETS}
        for pool in pooled["test"]:
            ranks = {s: base[s].ranks(pooled[s][pool]) for s in SETS}
            rows.append(_row(ranks, source=name, pooling=pool, sigma=round(sigma, 6)))
    return rows


# -- popularity -----------------------------------------------------------------------------
def predicted_popularity(X: np.ndarray, counts: np.ndarray, fit_on: np.ndarray, lam: float) -> np.ndarray:
    """Ridge regression of log(1 + counts) on X (each column standardised over ``fit_on``, plus
    an intercept), fitted on the items ``fit_on`` (bool), predicted for every item."""
    X = np.asarray(X, np.float64)
    mu, sd = X[fit_on].mean(0), X[fit_on].std(0) + 1e-6
    Z = np.hstack([(X - mu) / sd, np.ones((len(X), 1))])
    y = np.log1p(np.asarray(counts, np.float64))
    A = Z[fit_on]
    W = np.linalg.solve(A.T @ A + lam * np.eye(Z.shape[1]), A.T @ y[fit_on])
    return Z @ W


def popularity_rows(split, knn, base: dict, lambdas, grid) -> list[dict]:
    counts = np.bincount(np.asarray(split.train_items), minlength=split.n_items)
    cands = {s: _candidates(split, s) for s in SETS}
    fit_on = counts > 0
    for s in SETS:
        fit_on[np.asarray(getattr(split, f"{s}_items"))] = False
    X = torch.cat([knn.features[m].features.float() for m in knn.modalities], dim=1).numpy()
    zk = {s: standardise(base[s].scores, base[s].counted) for s in SETS}
    test_items, test_cases = np.unique(np.asarray(split.test_items), return_counts=True)
    rows = []
    for lam in lambdas:
        pop = predicted_popularity(X, counts, fit_on, lam)
        corr = float(np.corrcoef(pop[test_items], np.log1p(test_cases))[0, 1]) if len(test_items) > 1 else 0.0
        zp = {s: standardise(pop[cands[s]].astype(np.float32), base[s].counted) for s in SETS}
        for w in grid:
            ranks = {s: base[s].ranks((1 - w) * zk[s] + w * zp[s]) for s in SETS}
            rows.append(_row(ranks, lam=lam, w=w, corr_test=round(corr, 4)))
    return rows


def run(store, probe: str, split_ref: str, models: list[str], knn_ref: str | None, args) -> dict:
    from mmiris.data.split import load_split
    from mmiris.errors import MmirisError

    split = load_split(store, split_ref)
    split_full = str(store.manifest(split_ref).ref)
    history = split.history()
    t0 = time.perf_counter()
    out: dict = {"probe": probe, "split": split_ref, "models": models, "knn": knn_ref}
    if probe == "ensemble":
        if len(models) < 2:
            raise MmirisError("the ensemble probe needs at least two --models")
        if len(models) > 6:
            raise MmirisError(f"the ensemble probe ranks every subset of --models: at most 6, got {len(models)}")
        scores = []
        for ref in models:
            m = _loaded(store, split_full, ref, history)
            scores.append({s: case_scores(m, split, s) for s in SETS})
            log.info("%s scored (%.0f s)", ref, time.perf_counter() - t0)
        rows = ensemble_rows(scores)
        out |= {"rows": rows, "summary": ensemble_summary(rows)}
    else:
        if knn_ref is None:
            raise MmirisError(f"the {probe} probe needs --knn (a content_knn model on the split)")
        knn = _loaded(store, split_full, knn_ref, history)
        base = {s: case_scores(knn, split, s) for s in SETS}
        log.info("content kNN scored (%.0f s)", time.perf_counter() - t0)
        if probe == "pooling":
            loaded = {ref: _loaded(store, split_full, ref, history) for ref in models}
            rows = pooling_rows(split, pooling_sources(knn, loaded), args.taus, args.ks, base)
            sources = dict.fromkeys(r["source"] for r in rows)
            out |= {"rows": rows, "picked": {src: _picked([r for r in rows if r["source"] == src]) for src in sources}}
        else:
            rows = popularity_rows(split, knn, base, args.lambdas, args.weights)
            out |= {"rows": rows, "picked": _picked(rows)}
    log.info("%s probe done (%.0f s)", probe, time.perf_counter() - t0)
    return out | {"date": dt.date.today().isoformat()}


def save(path: Path, row: dict) -> dict:
    """Add or replace ``row`` (keyed by probe, split and inputs) in the results file, atomically."""

    def key(r):
        return (r["probe"], r["split"], tuple(r["models"]), r["knn"])

    rows = {key(r): r for r in (json.loads(path.read_text())["rows"] if path.exists() else [])}
    rows[key(row)] = row
    return write_json(path, {"rows": sorted(rows.values(), key=lambda r: json.dumps(key(r)))})


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of numbers, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.new_item_probes", description=__doc__.split("\n\n")[0])
    p.add_argument("probe", choices=("ensemble", "pooling", "popularity"))
    p.add_argument("--store", default=os.environ.get("MMIRIS_STORE", str(ROOT / "mmiris-store")))
    p.add_argument("--split", required=True, help="a cold-item split")
    p.add_argument("--models", default="", help="new-item models trained on it (comma list)")
    p.add_argument("--knn", default=None, help="a content_knn model on the split (pooling, popularity)")
    p.add_argument("--taus", type=_floats, default=[0.0, 0.25, 0.5, 1.0, 2.0], help="softmax sharpness (pooling)")
    p.add_argument("--ks", type=lambda t: [int(v) for v in _floats(t)], default=[10, 30, 100], help="top-k (pooling)")
    p.add_argument("--lambdas", type=_floats, default=[100.0, 1000.0, 10000.0], help="ridge strengths (popularity)")
    p.add_argument("--weights", type=_floats, default=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5], help="prior weights w")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    torch.set_num_threads(args.threads)
    from mmiris.artifacts import ArtifactStore

    models = [m for m in args.models.split(",") if m.strip()]
    return finish(
        "benchmarks.new_item_probes",
        lambda: run(ArtifactStore(args.store), args.probe, args.split, models, args.knn, args),
        save,
        args.out,
    )


if __name__ == "__main__":
    sys.exit(main())
