"""Benchmark: forward+backward speed of the attention models on ML-1M-shaped user batches.

    python -m benchmarks.model_speed [--data ../shared/data] [--users 600] [--models nais_prod,...]

Reads the real ML-1M training histories (``<data>/ml-1m-ncf/ml-1m.train.rating``), so history
lengths have ML-1M's distribution (median 96, max 2,313 here). Samples ``--users`` users,
gives each the training instances of one epoch — its positives plus 4 sampled negatives per
positive, all in one row (instances grouped by user, DESIGN.md "How it must run") — and
batches rows of similar length up to ``--batch-pairs`` history×target pairs. Times
``pointwise_log_loss(scores) + regularization`` forward and backward (no optimizer step).

Pairs = Σ over instances of the user's history length; one ML-1M epoch is Σ_u 5·n_u² ≈ 1.9e9.
``<model>_emb<k>_epoch_seconds`` = epoch pairs / measured pairs per second. Multimodal IRIS
gets random features of the offline encoders' sizes (image 1280, text 384; 1% missing).

The whole trainer step (sampler, Adam, batch 512) is timed by ``benchmarks.train_speed``.

Last line: one JSON object with ``<model>_emb<k>_pairs_per_s`` and ``..._epoch_seconds``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mmiris.data.modality import ItemModality
from mmiris.data.split import UserHistory
from mmiris.models import attentive
from mmiris.models.build import build_model
from mmiris.models.losses import pointwise_log_loss
from mmiris.train.config import autocast

ROOT = Path(__file__).resolve().parents[1]
NEGATIVES = 4  # paper §IV-D: K = 4 negatives per positive


def _die(msg: str) -> None:
    print(f"model_speed benchmark: {msg}", file=sys.stderr)
    sys.exit(2)


def load_history(data: Path) -> UserHistory:
    path = data / "ml-1m-ncf" / "ml-1m.train.rating"
    if not path.exists():
        _die(f"{path} not found: pass --data pointing at the shared benchmark data (see DESIGN.md)")
    raw = np.loadtxt(path, dtype=np.int64, usecols=(0, 1), delimiter="\t")
    n_users, n_items = int(raw[:, 0].max()) + 1, int(raw[:, 1].max()) + 1
    return UserHistory.from_pairs(raw[:, 0], raw[:, 1], n_users, n_items)


def batches(
    history: UserHistory,
    users: np.ndarray,
    batch_pairs: int,
    rng: np.random.Generator,
    batch_instances: int | None = None,
):
    """Rows of one epoch's instances per user, sorted by length, packed up to batch_pairs pairs.
    With ``batch_instances`` (the trainer's paper setting: 512), batches of that many instances
    instead, a long user's row spread over several batches as the trainer's sampler does."""
    users = users[np.argsort(history.lengths(users))]
    if batch_instances:
        return _instance_batches(history, users, batch_instances, rng)
    out, cur, cur_pairs = [], [], 0
    for u in users:
        n = int(history.lengths([u])[0])
        pairs = n * n * (1 + NEGATIVES)
        if cur and cur_pairs + pairs > batch_pairs:
            out.append(cur)
            cur, cur_pairs = [], 0
        cur.append(u)
        cur_pairs += pairs
    if cur:
        out.append(cur)
    result = []
    for rows in out:
        T = max(int(history.lengths([u])[0]) * (1 + NEGATIVES) for u in rows)
        items = torch.zeros(len(rows), T, dtype=torch.long)
        labels = torch.zeros(len(rows), T)
        mask = torch.zeros(len(rows), T, dtype=torch.bool)
        pairs = 0
        for r, u in enumerate(rows):
            pos = history.items_of(u)
            neg = rng.integers(0, history.n_items, size=len(pos) * NEGATIVES)  # (not filtered: speed only)
            row = np.concatenate([pos, neg])
            items[r, : len(row)] = torch.from_numpy(row)
            labels[r, : len(pos)] = 1
            mask[r, : len(row)] = True
            pairs += len(row) * len(pos)
        result.append((torch.tensor(rows), items, labels, mask, pairs))
    return result


def _instance_batches(history, users, batch_instances, rng):
    per = max(1, batch_instances // (1 + NEGATIVES))  # positives per batch
    pos_users = np.concatenate([np.full(history.lengths([u])[0], u) for u in users])
    pos_items = np.concatenate([history.items_of(u) for u in users])
    result = []
    for s in range(0, len(pos_users), per):
        bu, bi = pos_users[s : s + per], pos_items[s : s + per]
        rows = list(dict.fromkeys(bu.tolist()))
        cols = [
            np.concatenate([bi[bu == u], rng.integers(0, history.n_items, (bu == u).sum() * NEGATIVES)]) for u in rows
        ]
        T = max(len(c) for c in cols)
        items = torch.zeros(len(rows), T, dtype=torch.long)
        labels = torch.zeros(len(rows), T)
        mask = torch.zeros(len(rows), T, dtype=torch.bool)
        pairs = 0
        for r, (u, c) in enumerate(zip(rows, cols)):
            items[r, : len(c)] = torch.from_numpy(c)
            labels[r, : (bu == u).sum()] = 1
            mask[r, : len(c)] = True
            pairs += len(c) * int(history.lengths([u])[0])
        result.append((torch.tensor(rows), items, labels, mask, pairs))
    return result


def fake_features(n_items: int, dims: dict[str, int], seed: int) -> dict[str, ItemModality]:
    g = np.random.default_rng(seed)
    out = {}
    for name, d in dims.items():
        present = g.random(n_items) > 0.01
        vecs = np.abs(g.normal(size=(n_items, d))).astype(np.float32)
        out[name] = ItemModality.from_arrays(name, np.arange(n_items), vecs, present, n_items, encoder="random")
    return out


def measure(model, work, repeats: int, dtype: str = "fp32") -> tuple[float, float, float]:
    """(pairs per wall second, wall seconds, CPU seconds of this process) of forward+backward over
    the batches, best of ``repeats``. CPU seconds show what the run cost when other jobs share
    the cores: pairs / CPU-second × cores is the rate an idle machine would give."""
    best, best_cpu = float("inf"), float("inf")
    total_pairs = sum(w[-1] for w in work)
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        for users, items, labels, mask, _ in work:
            model.zero_grad(set_to_none=True)
            with autocast(dtype, "cpu"):  # the trainer's precision policy (attention stays fp32)
                loss = pointwise_log_loss(model.scores(users, items), labels, mask) + model.regularization()
            loss.backward()
        wall = time.perf_counter() - start
        if wall < best:
            best, best_cpu = wall, time.process_time() - cpu
    return total_pairs / best, best, best_cpu


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data")
    ap.add_argument(
        "--models",
        default="nais_prod:16,nais_prod:64,nais_concat:16,nais_concat:64,multimodal_iris:64",
        help="comma-separated model:emb",
    )
    ap.add_argument("--users", type=int, default=600, help="users sampled for timing (shorten with fewer)")
    ap.add_argument("--batch-pairs", type=int, default=4_000_000, help="history×target pairs per batch")
    ap.add_argument(
        "--batch-instances",
        type=int,
        default=None,
        help="batches of this many instances (the trainer's 512) instead of whole-user rows",
    )
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--backend", default="auto", choices=["auto", "fused", "eager"])
    ap.add_argument("--threads", type=int, default=None, help="torch/kernel threads (default: all cores)")
    ap.add_argument("--image-dim", type=int, default=1280)
    ap.add_argument("--text-dim", type=int, default=384)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--dtype",
        default="fp32",
        choices=["fp32", "bf16"],
        help="bf16: the forward under bf16 autocast, as TrainConfig.precision='bf16' (IRIS towers)",
    )
    args = ap.parse_args(argv)
    if not args.data.exists():
        _die(f"--data {args.data} does not exist: the benchmark needs the ML-1M NCF split")
    if args.threads:
        torch.set_num_threads(args.threads)
    history = load_history(args.data)
    lens = history.lengths().astype(np.int64)
    epoch_pairs = int(((1 + NEGATIVES) * lens * lens).sum())
    rng = np.random.default_rng(args.seed)
    sample = rng.choice(history.n_users, size=min(args.users, history.n_users), replace=False)
    work = batches(history, sample, args.batch_pairs, rng, args.batch_instances)
    feats = fake_features(history.n_items, {"image": args.image_dim, "text": args.text_dim}, args.seed)
    result = {
        "epoch_pairs": epoch_pairs,
        "users_sampled": len(sample),
        "batches": len(work),
        "sample_pairs": sum(w[-1] for w in work),
        "threads": torch.get_num_threads(),
        "fused_kernel": attentive.fused_available(),
        "backend": args.backend,
        "batch_instances": args.batch_instances,
        "dtype": args.dtype,
    }
    print(
        f"ML-1M: {history.n_users} users, {history.n_items} items, epoch pairs {epoch_pairs:.3g}; "
        f"timing {len(sample)} users in {len(work)} batches ({result['sample_pairs']:.3g} pairs)",
        flush=True,
    )
    for spec in args.models.split(","):
        name, emb = spec.split(":")
        torch.manual_seed(args.seed)
        model = build_model(name, {"emb": int(emb)}, history.n_users, history.n_items, history, feats)
        model.backend = args.backend
        measure(model, work[:1], 1, args.dtype)  # warm-up (kernel build, allocator)
        load = os.getloadavg()[0]
        rate, secs, cpu = measure(model, work, args.repeats, args.dtype)
        key = f"{name}_emb{emb}"
        result[f"{key}_pairs_per_s"] = round(rate)
        result[f"{key}_epoch_seconds"] = round(epoch_pairs / rate, 1)
        result[f"{key}_pairs_per_cpu_s"] = round(result["sample_pairs"] / cpu)
        result[f"{key}_load_avg_before"] = round(load, 2)
        print(
            f"{key}: {rate / 1e6:.1f}M pairs/s fwd+bwd ({secs:.1f} s wall, {cpu:.1f} s CPU for the sample; "
            f"load avg {load:.1f}) -> {epoch_pairs / rate:.0f} s per ML-1M epoch",
            flush=True,
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
