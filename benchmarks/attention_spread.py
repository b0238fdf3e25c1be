"""Benchmark: does an attentive model's attention depend on the target item?

    python -m benchmarks.attention_spread --store STORE            # every attentive study row
    python -m benchmarks.attention_spread --store STORE --models model-nais_concat@V,...

For each trained model: a seeded sample of users, each with random target items outside their
training history; a_ij over the history for every target (the model's own ``attention``);
then ``mmiris.eval.explanations.attention_target_share`` of log a_ij — the share of its
variance that is neither per target nor per history item. 0 means every target ranks the
user's history the same way, so explanations cannot be target-specific whatever the scores do.
This backs the study's reading of ``explanation_overlap`` with the attention itself.

Models default to the ``model_ref`` of every row of ``--results`` (the study's rows file) that
has an ``explanation_overlap``. Each row is printed as JSON; the last line is
``{"rows": [{"key", "model_ref", "target_share", "explanation_overlap", "users", "targets"}]}``,
also written to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from benchmarks.results_io import write_json

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger("benchmarks.attention_spread")


def target_share(store, model_ref: str, users: int, targets: int, seed: int, batch: int = 25) -> dict:
    from mmiris.models.build import load_model

    return model_target_share(load_model(store, model_ref), users, targets, seed, batch, label=model_ref)


def model_target_share(model, users: int, targets: int, seed: int, batch: int = 25, label: str = "") -> dict:
    """``target_share`` of a model object (e.g. one loaded from a training checkpoint)."""
    import numpy as np
    import torch

    from mmiris.eval.explanations import attention_target_share

    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(model.n_users, size=min(users, model.n_users), replace=False))
    shares, weights, t0 = [], [], time.perf_counter()
    for start in range(0, len(picked), batch):
        u = torch.as_tensor(picked[start : start + batch])
        hist, hlen = model.history_of(u)
        items = np.empty((len(u), targets), dtype=np.int64)
        for b in range(len(u)):  # targets outside the history (a_ij is 0 on the target itself)
            seen = set(hist[b, : int(hlen[b])].tolist())
            pool = np.setdiff1d(np.arange(model.n_items), np.fromiter(seen, dtype=np.int64))
            items[b] = rng.choice(pool, size=targets, replace=False)
        _, a, mask = model.attention(u, torch.as_tensor(items))
        la = torch.log(a.double().clamp_min(1e-300)).cpu().numpy()
        share = attention_target_share(la, mask.cpu().numpy())
        if share == share:  # not NaN
            shares.append(share)
            weights.append(len(u))
        log.info("%s: %d/%d users (%.0f s)", label, start + len(u), len(picked), time.perf_counter() - t0)
    return {
        "target_share": round(float(np.average(shares, weights=weights)), 4),
        "users": len(picked),
        "targets": targets,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.attention_spread", description=__doc__.split("\n\n")[0])
    p.add_argument("--store", default=os.environ.get("MMIRIS_STORE", str(ROOT / "mmiris-store")))
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "study.json"))
    p.add_argument("--models", default="", help="comma list of model refs (default: the attentive rows of --results)")
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--targets", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "attention_spread.json"))
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    from mmiris.artifacts import ArtifactStore

    store = ArtifactStore(args.store)
    if args.models:
        todo = [{"key": ref, "model_ref": ref, "explanation_overlap": None} for ref in args.models.split(",") if ref]
    else:
        path = Path(args.results)
        if not path.exists():
            print(f"benchmarks.attention_spread: no rows file {path}; pass --models", file=sys.stderr)
            return 2
        rows = json.loads(path.read_text())["rows"]
        todo = [
            {"key": r["key"], "model_ref": r["model_ref"], "explanation_overlap": r["explanation_overlap"]}
            for r in rows
            if r.get("explanation_overlap") is not None and "error" not in r
        ]
    out = []
    for row in todo:
        if row["model_ref"].split("@")[0] not in store.names():
            log.warning("%s: %s is not in %s; skipped", row["key"], row["model_ref"], args.store)
            continue
        row = {**row, **target_share(store, row["model_ref"], args.users, args.targets, args.seed)}
        print(json.dumps(row), flush=True)
        out.append(row)
    doc = {"rows": out, "users": args.users, "targets": args.targets, "seed": args.seed}
    write_json(args.out, doc)
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
