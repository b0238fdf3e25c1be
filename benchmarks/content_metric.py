"""Benchmark: how much can a *learned* content similarity add to content kNN on new items?

    python -m benchmarks.content_metric --store STORE --split split_cold@V --knn model-content_knn@V

Content kNN scores a candidate j by the mean cosine between its content vector c_j and those of
the user's history. Hybrid IRIS's similarity term starts from that cosine on the leading
principal directions and, with ``content_metric``, learns the projections. This benchmark
isolates that term: a content-only model with nothing per item, so every item, cold or warm, is
scored the same way,

    r̂_uj = ( (1 / |R_u⁺\\{j}|) Σ_{i ∈ R_u⁺\\{j}} c_i M_p ) · ( c_j M_q )

with M_p, M_q ∈ R^{D×d} starting at the d leading principal directions of the catalogue's c
(epoch 0 is content kNN on those directions; with d ≥ the rank of C it is content kNN
exactly). It trains M_p and M_q with BPR on the split's training pairs, negatives drawn from
the items that have training interactions, Adam, and ``--feature-dropout``: per batch each
projection loses that share of the content dimensions (the rest scaled up), the
``metric_dropout`` of Hybrid IRIS. After every epoch it scores the validation and the test
cases with the evaluate stage's sampled protocol (ties against the held-out item). On a
plain cold split the validation cases are warm items, which a learned metric can fit by
identity, so the row also says which epoch validation would pick and what the test says there.

The content vectors are the ``--knn`` model's (its image weight). Prints one JSON line
``{"split", "knn", "config", "epochs": [{"epoch", "loss", "valid_hr10", ..., "hr10", ...}],
"selected"}`` and writes it to ``--out`` keyed by split and config (a rerun replaces it).
Runs on one thread in a few minutes for ML-1M (22–25 s of training per epoch measured on the 2-core sandbox beside one other job).
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

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.results_io import finish, write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "content_metric.json"

log = logging.getLogger("benchmarks.content_metric")


class ContentMetric:
    """The learned content-only similarity: the content vectors ``C`` [I, D], a user history
    (``mmiris.data.split.UserHistory``), and projections M_p, M_q [D, d] (principal directions
    at the start)."""

    def __init__(self, C: torch.Tensor, history, d: int):
        self.C = C.float()
        I, D = self.C.shape
        self.n = torch.from_numpy(history.lengths()).float()
        users = torch.from_numpy(np.repeat(np.arange(history.n_users), np.diff(history.indptr)))
        H = torch.sparse_coo_tensor(
            torch.stack([users, torch.from_numpy(history.indices)]),
            torch.ones(len(users)),
            (history.n_users, I),
            check_invariants=True,
        )
        self.S = torch.sparse.mm(H.coalesce(), self.C)  # Σ_{i ∈ R_u⁺} c_i per user
        basis = torch.linalg.svd(self.C.double(), full_matrices=False)[2][:d].t().float()
        basis = F.pad(basis, (0, d - basis.shape[1]))
        self.Mp = torch.nn.Parameter(basis.clone())
        self.Mq = torch.nn.Parameter(basis.clone())

    def user_vectors(self, users: torch.Tensor, leave_out: torch.Tensor | None, Mp: torch.Tensor) -> torch.Tensor:
        """(1 / |R_u⁺\\{j}|) Σ c_i M_p per case; ``leave_out``: the item j taken out of the
        history sum (a training positive), or None (the scored item is not in the history)."""
        S, n = self.S[users], self.n[users]
        if leave_out is not None:
            S, n = S - self.C[leave_out], n - 1
        return (S @ Mp) / n.clamp(min=1)[:, None]

    def scores(self, users: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """r̂ of ``candidates`` [B, C] (none of them in the user's history) for ``users`` [B]."""
        u = self.user_vectors(users, None, self.Mp)
        return torch.einsum("bd,bcd->bc", u, (self.C @ self.Mq)[candidates])

    def masked(self, drop: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """M_p, M_q with a share ``drop`` of the content dimensions (rows) dropped, kept rows
        scaled by 1/(1 − drop): one mask per projection."""
        if not drop:
            return self.Mp, self.Mq
        D = self.Mp.shape[0]
        keep = [(torch.rand(D, generator=gen) >= drop).float() / (1 - drop) for _ in range(2)]
        return self.Mp * keep[0][:, None], self.Mq * keep[1][:, None]

    def bpr_loss(self, users, pos, neg, Mp, Mq) -> torch.Tensor:
        """BPR of each positive (left out of its own history) against its negatives [B, K]."""
        CMq = self.C @ Mq  # every item's target side once: cheaper than per case
        sp = (self.user_vectors(users, pos, Mp) * CMq[pos]).sum(1)
        sn = torch.einsum("bd,bkd->bk", self.user_vectors(users, None, Mp), CMq[neg])
        return -F.logsigmoid(sp[:, None] - sn).mean()


def sampled_metrics(model: ContentMetric, users, items, negatives, chunk: int = 8192) -> dict[str, float]:
    """HR/NDCG@10 of the sampled protocol (``mmiris.eval``: duplicate negatives and the
    positive among them do not count, ties count against the held-out item)."""
    from mmiris.eval.metrics import metrics_from_ranks, positive_ranks
    from mmiris.eval.protocols import _dedupe_negatives

    users, items, negatives = (np.array(x, np.int64) for x in (users, items, negatives))  # writable copies
    counted, _ = _dedupe_negatives(items, negatives)
    ranks = []
    with torch.no_grad():
        for a in range(0, len(users), chunk):
            cand = torch.from_numpy(np.concatenate([items[a : a + chunk, None], negatives[a : a + chunk]], 1))
            s = model.scores(torch.from_numpy(users[a : a + chunk]), cand)
            ranks.append(positive_ranks(s[:, 0], s[:, 1:], torch.from_numpy(counted[a : a + chunk])))
    met = metrics_from_ranks(torch.cat(ranks))
    return {"hr10": round(float(met["hr10"]), 4), "ndcg10": round(float(met["ndcg10"]), 4)}


def train(model: ContentMetric, split, cfg: dict, on_epoch=None) -> list[dict]:
    """BPR epochs over the split's training pairs; after each (and before the first, epoch 0)
    the validation and test figures. ``on_epoch(row)`` sees each row as it is made."""
    gen = torch.Generator().manual_seed(cfg["seed"])
    opt = torch.optim.Adam([model.Mp, model.Mq], lr=cfg["lr"])
    tu = torch.from_numpy(np.array(split.train_users, np.int64))
    ti = torch.from_numpy(np.array(split.train_items, np.int64))
    warm = torch.unique(ti)  # negatives: items the training data knows
    rows = []

    def figures(epoch: int, loss: float | None, seconds: float) -> None:
        v = sampled_metrics(model, split.valid_users, split.valid_items, split.valid_negatives)
        t = sampled_metrics(model, split.test_users, split.test_items, split.test_negatives)
        row = {"epoch": epoch, "loss": loss, "seconds": round(seconds, 1)}
        row.update({"valid_hr10": v["hr10"], "valid_ndcg10": v["ndcg10"], **t})
        rows.append(row)
        if on_epoch:
            on_epoch(row)

    figures(0, None, 0.0)
    bs = cfg["batch_size"]
    for epoch in range(1, cfg["epochs"] + 1):
        t0, total = time.perf_counter(), 0.0
        perm = torch.randperm(len(tu), generator=gen)
        for a in range(0, len(tu), bs):
            idx = perm[a : a + bs]
            neg = warm[torch.randint(len(warm), (len(idx), cfg["negatives"]), generator=gen)]
            Mp, Mq = model.masked(cfg["feature_dropout"], gen)
            loss = model.bpr_loss(tu[idx], ti[idx], neg, Mp, Mq)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        figures(epoch, round(total / len(tu), 4), time.perf_counter() - t0)
    return rows


def selected(rows: list[dict]) -> dict:
    """The epoch validation picks (HR@10, then NDCG@10) and the test figures there."""
    best = max(rows, key=lambda r: (r["valid_hr10"], r["valid_ndcg10"]))
    return {"epoch": best["epoch"], "valid_hr10": best["valid_hr10"], "hr10": best["hr10"], "ndcg10": best["ndcg10"]}


def run(store, split_ref: str, knn_ref: str, cfg: dict) -> dict:
    from mmiris.data.split import load_split
    from mmiris.errors import MmirisError
    from mmiris.models.build import load_model

    split = load_split(store, split_ref)
    knn = load_model(store, knn_ref)
    if knn.name != "content_knn":
        raise MmirisError(f"--knn {knn_ref} is a {knn.name} model; expected content_knn")
    C = knn.C
    assert isinstance(C, torch.Tensor)
    model = ContentMetric(C, split.history(), cfg["d"])
    torch.manual_seed(cfg["seed"])

    def progress(row: dict) -> None:
        log.info("content_metric: epoch %d/%d %s", row["epoch"], cfg["epochs"], json.dumps(row))

    rows = train(model, split, cfg, progress)
    return {
        "split": split_ref,
        "knn": knn_ref,
        "setting": store.manifest(split_ref).stats.get("setting", "full"),
        "validation": store.manifest(split_ref).stats.get("validation", "warm"),
        "config": cfg,
        "epochs": rows,
        "selected": selected(rows),
        "date": dt.date.today().isoformat(),
    }


def row_key(row: dict) -> str:
    return f"{row['split']}|{json.dumps(row['config'], sort_keys=True)}"


def save(path: Path, row: dict) -> dict:
    rows = {row_key(r): r for r in (json.loads(path.read_text())["rows"] if path.exists() else [])}
    rows[row_key(row)] = row
    return write_json(path, {"rows": [rows[k] for k in sorted(rows)]})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.content_metric", description=__doc__.split("\n\n")[0])
    p.add_argument("--store", default=os.environ.get("MMIRIS_STORE", str(ROOT / "mmiris-store")))
    p.add_argument("--split", required=True, help="a split (a cold-item one for new items)")
    p.add_argument("--knn", required=True, help="a content_knn model on that split: its content vectors")
    p.add_argument("--d", type=int, default=64, help="directions of the projections (default 64)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--negatives", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--feature-dropout", type=float, default=0.5, help="share of content dimensions dropped per batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    if not 0.0 <= args.feature_dropout < 1.0 or args.d < 1 or args.epochs < 0:
        print(
            "benchmarks.content_metric: --feature-dropout must be in [0, 1), --d >= 1, --epochs >= 0", file=sys.stderr
        )
        return 2
    torch.set_num_threads(args.threads)
    cfg = {k: getattr(args, k) for k in ("d", "epochs", "lr", "negatives", "batch_size", "feature_dropout", "seed")}
    from mmiris.artifacts import ArtifactStore

    return finish(
        "benchmarks.content_metric", lambda: run(ArtifactStore(args.store), args.split, args.knn, cfg), save, args.out
    )


if __name__ == "__main__":
    sys.exit(main())
