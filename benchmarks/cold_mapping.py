"""Benchmark: can content predict a cold item's free embedding? (Hybrid IRIS on cold items)

    python -m benchmarks.cold_mapping --store STORE --model model-hybrid_iris@V --split split_cold@V

A trained Hybrid IRIS gives a held-out (cold) item q_j = Q_j + U_q g_j with Q_j = 0: its
content part alone. This fits, on the warm items of the same model, a ridge regression from
content to the learned Q_j, writes the prediction into the cold items' Q rows (in memory,
nothing is published), and evaluates the split's test cases (each cold item's interactions
against 99 other cold items) with the evaluate stage's sampled protocol. Two inputs: the
model's own tower outputs g_j (k per modality) and the raw feature vectors the towers read.
If a post-hoc map beats the trained model, the content carries what the model failed to
learn, and the bottleneck is training (or the towers' width), not the content.

Prints one JSON line ``{"model", "split", "as_trained": {...}, "<input>_ridge<λ>": {...}}``
with sampled HR@10 / NDCG@10, also written to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from benchmarks.results_io import write_json

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cold_mapping", description=__doc__.split("\n\n")[0])
    p.add_argument("--store", default=os.environ.get("MMIRIS_STORE", str(ROOT / "mmiris-store")))
    p.add_argument("--model", required=True, help="a hybrid_iris model trained on a cold-item split")
    p.add_argument("--split", required=True, help="that cold-item split")
    p.add_argument("--lambdas", default="1,100", help="ridge strengths (comma list)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cold_mapping.json"))
    args = p.parse_args(argv)
    import numpy as np
    import torch

    from mmiris.artifacts import ArtifactStore
    from mmiris.data.split import load_split
    from mmiris.eval.metrics import metrics_from_ranks
    from mmiris.eval.protocols import sampled_ranks
    from mmiris.models.build import load_model

    store = ArtifactStore(args.store)
    model = load_model(store, args.model)
    split = load_split(store, args.split)
    model.set_history(split.history())
    trained = np.bincount(np.asarray(split.train_items), minlength=split.n_items)
    cold, warm = np.where(trained == 0)[0], np.where(trained > 0)[0]

    def evaluate() -> dict:
        r = sampled_ranks(model, split.test_users, split.test_items, split.test_negatives)
        return {k: round(v, 4) for k, v in metrics_from_ranks(r.ranks).items() if k in ("hr10", "ndcg10")}

    out: dict = {"model": args.model, "split": args.split, "cold_items": len(cold), "as_trained": evaluate()}
    with torch.no_grad():
        ids = torch.arange(model.n_items)
        vecs = model.item_vectors(ids)
        inputs = {
            "tower_outputs": torch.cat([vecs[m].float() for m in model.modalities], dim=1),
            "raw_features": torch.cat([getattr(model, f"{m}_features").float() for m in model.modalities], dim=1),
        }
        Q = model.Q.weight
        kept = Q.detach().clone()
        for name, x in inputs.items():
            X = np.hstack([x.numpy().astype(np.float64), np.ones((model.n_items, 1))])
            for lam in (float(v) for v in args.lambdas.split(",") if v):
                Xw = X[warm]
                W = np.linalg.solve(Xw.T @ Xw + lam * np.eye(X.shape[1]), Xw.T @ kept.numpy()[warm].astype(np.float64))
                Q[torch.as_tensor(cold)] = torch.as_tensor(X[cold] @ W, dtype=Q.dtype)
                out[f"{name}_ridge{lam:g}"] = evaluate()
                Q.copy_(kept)
    print(json.dumps(out), flush=True)
    write_json(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
