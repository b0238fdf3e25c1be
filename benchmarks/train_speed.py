"""Benchmark: the trainer's real step on ML-1M, projected to a full epoch, per model.

    python -m benchmarks.train_speed [--data ../shared/data] [--models nais_prod:16,multimodal_iris:16]
                                     [--threads N] [--paper-dims] [--dtype auto|fp32|bf16]

Ingests ``<data>/ml-1m-ncf`` through the ingest stage (into ``--store``), builds the epoch-0
plan of the trainer's sampler (K = 4 negatives, batch 512, seed 0) and runs the trainer's
step path on a deterministic spread of its batches: batch building (``TrainSampler.shard``),
``LossModule`` (model scores, loss, eq. 12 terms) under the training precision's autocast,
backward and the Adam step. The spread: the epoch's batches ordered by their first user's
history length (which sets a batch's cost), every ``1/--fraction``-th of them, so long and
short histories are represented as in the epoch. Projected epoch = the sampler's plan time
+ measured step time × (batches in the epoch / batches timed).

Multimodal models get random features of the offline encoders' sizes (image 1280,
text 384; 1% missing); ``--paper-dims`` uses the paper's (2048, 768). Each model runs in a
fresh process, so ``peak_rss_mb`` is its own peak. For ``--eval-models`` the same process
then times evaluation of all test users: full ranking (every unseen item) and sampled
(1 + 99), with ``mmiris.eval.protocols`` as the evaluate stage calls it.

``--quality-epochs N`` trains each model for N whole epochs with the trainer instead (its
validation HR@10 / NDCG@10 and real epoch seconds): run it with ``--dtype bf16`` and
``--dtype fp32`` to see that reduced precision learns the same model.

Last line: one JSON object with, per model and emb, ``<model>_emb<k>_instances_per_s``,
``_epoch_seconds``, ``_peak_rss_mb``, ``_dtype`` (what ``--dtype`` resolved to),
``_cpu_fraction`` (process CPU time / wall time: < threads means other jobs took the cores),
``_epoch_cpu_seconds`` (the same projection from this process's CPU time: with one thread, what
one core delivers when other jobs share the machine),
``_full_eval_seconds``, ``_sampled_eval_seconds`` and their ``_cpu_seconds`` (eval models); ratios
``<iris>_emb16_over_nais_concat_emb16`` and ``<model>_emb64_over_emb16`` (same run);
``threads``, ``dtype``, ``load_avg`` (1-minute load average before each model, the max).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import platform
import queue
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALL = ["mf", "fism", "nais_prod", "nais_concat", "image_iris", "image_add_text_iris", "multimodal_iris"]
DEFAULT_MODELS = ",".join(f"{m}:{e}" for e in (16, 64) for m in ALL)
IRIS = ("image_iris", "image_add_text_iris", "multimodal_iris")


def _die(msg: str) -> int:
    print(f"benchmarks.train_speed: {msg}", file=sys.stderr)
    return 2


def pick_batches(plan, lengths, fraction: float) -> list[int]:
    """Every 1/fraction-th batch of the epoch in order of its first user's history length."""
    first_user = plan.users[plan.bounds[:-1]]
    order = sorted(range(plan.n_batches), key=lambda b: (int(lengths[first_user[b]]), b))
    step = max(1, round(1 / fraction))
    return [order[i] for i in range(step // 2, len(order), step)]


def run_model(store_uri: str, split_ref: str, name: str, emb: int, opts: dict, out) -> None:
    """One model in a fresh process: timed training steps, then (maybe) evaluation timings."""
    try:
        import numpy as np
        import torch

        from benchmarks.model_speed import fake_features
        from mmiris.artifacts import ArtifactStore
        from mmiris.data.split import load_split
        from mmiris.eval.protocols import full_ranks, sampled_ranks
        from mmiris.models import attentive, get_model_class
        from mmiris.models.build import build_model
        from mmiris.train.config import TrainConfig, autocast, resolve_precision
        from mmiris.train.sampler import TrainSampler
        from mmiris.train.trainer import LossModule

        if opts["threads"]:
            torch.set_num_threads(opts["threads"])
        cfg = TrainConfig(precision=opts["dtype"])
        device = torch.device("cpu")
        split = load_split(ArtifactStore(store_uri), split_ref)
        history = split.history()
        cls = get_model_class(name)
        feats = (
            fake_features(split.n_items, {"image": opts["image_dim"], "text": opts["text_dim"]}, 0)
            if cls.modalities
            else {}
        )
        precision = resolve_precision(cfg.precision, cls, device)
        torch.manual_seed(cfg.seed)
        model = build_model(
            name, {"emb": emb}, split.n_users, split.n_items, history, {m: feats[m] for m in cls.modalities}
        )
        model.train()
        step_module = LossModule(model, cfg.loss)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, foreach=True)  # as the trainer
        sampler = TrainSampler(history, cfg.negatives, cfg.batch_size, cfg.seed)
        t0 = time.perf_counter()
        plan = sampler.plan(0)
        plan_s = time.perf_counter() - t0
        chosen = pick_batches(plan, history.lengths(), opts["fraction"])
        per = 1 + cfg.negatives

        def step(b: int) -> int:
            shard = sampler.shard(0, b)
            bt = shard.batch.to(device)
            with autocast(precision, device):
                loss = step_module(bt.users, bt.items, bt.labels, bt.mask, bt.group, 1.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return shard.n_global * per

        if opts["quality_epochs"]:  # the real trainer for whole epochs: validation HR@10 of this dtype
            from mmiris.train.trainer import train

            t0 = time.perf_counter()
            res = train(
                model, split, TrainConfig(epochs=opts["quality_epochs"], precision=precision, threads=opts["threads"])
            )
            key = f"{name}_emb{emb}"
            out.put(
                {
                    f"{key}_valid_hr10": round(res.best_metrics.get("hr10", float("nan")), 4),
                    f"{key}_valid_ndcg10": round(res.best_metrics.get("ndcg10", float("nan")), 4),
                    f"{key}_train_seconds": round(time.perf_counter() - t0, 1),
                    f"{key}_dtype": precision,
                    f"{key}_epoch_seconds_real": [round(x, 1) for x in res.epoch_seconds],
                    f"{key}_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                }
            )
            return
        rest = [b for b in range(plan.n_batches) if b not in set(chosen)]
        for b in rest[: opts["warmup"]]:  # kernel build, allocator, oneDNN primitives
            step(b)
        load = os.getloadavg()[0]
        wall, cpu = time.perf_counter(), time.process_time()
        inst = sum(step(b) for b in chosen)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        key = f"{name}_emb{emb}"
        row = {
            f"{key}_instances_per_s": round(inst / wall, 1),
            f"{key}_epoch_seconds": round(plan_s + wall * plan.n_batches / len(chosen), 1),
            f"{key}_epoch_cpu_seconds": round(plan_s + cpu * plan.n_batches / len(chosen), 1),
            f"{key}_step_seconds": round(wall, 2),
            f"{key}_batches_timed": len(chosen),
            f"{key}_plan_seconds": round(plan_s, 2),
            f"{key}_dtype": precision,
            f"{key}_cpu_fraction": round(cpu / wall, 2),
            f"{key}_load_avg_before": round(load, 2),
            f"{key}_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "epoch_batches": plan.n_batches,
            "epoch_instances": int(plan.bounds[-1]) * per,
            "fused_kernel": attentive.fused_available(),
        }
        print(
            f"{key} ({precision}): {inst / wall:,.0f} instances/s over {len(chosen)} batches "
            f"({wall:.1f} s, CPU {cpu / wall:.2f} of wall, load avg {load:.2f}) -> "
            f"{row[f'{key}_epoch_seconds']:.0f} s per epoch",
            flush=True,
        )
        if opts["eval"] and f"{name}:{emb}" in opts["eval_models"]:
            model.eval()
            users, items = split.test_users, split.test_items
            valid_of = np.full(split.n_users, -1, np.int64)
            valid_of[split.valid_users] = split.valid_items
            t0, c0 = time.perf_counter(), time.process_time()
            full = full_ranks(model, users, items, history, also_exclude=valid_of[users], device=device)
            row[f"{key}_full_eval_seconds"] = round(time.perf_counter() - t0, 2)
            row[f"{key}_full_eval_cpu_seconds"] = round(time.process_time() - c0, 2)
            t0, c0 = time.perf_counter(), time.process_time()
            sampled_ranks(model, users, items, split.test_negatives, device=device)
            row[f"{key}_sampled_eval_seconds"] = round(time.perf_counter() - t0, 2)
            row[f"{key}_sampled_eval_cpu_seconds"] = round(time.process_time() - c0, 2)
            row[f"{key}_eval_users"] = len(users)
            row[f"{key}_eval_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
            print(
                f"{key}: evaluation of {len(users)} users: full ranking {row[f'{key}_full_eval_seconds']} s "
                f"(HR@10 {full.metrics()['hr10']:.4f} of a barely trained model), sampled "
                f"{row[f'{key}_sampled_eval_seconds']} s",
                flush=True,
            )
        out.put(row)
    except Exception as exc:
        logging.getLogger("benchmarks.train_speed").exception("%s emb %d failed", name, emb)
        out.put({f"{name}_emb{emb}_error": f"{type(exc).__name__}: {exc}"})


def _wait(proc, q) -> dict | None:
    while True:
        try:
            row = q.get(timeout=5)
            proc.join()
            return row
        except queue.Empty:
            if not proc.is_alive():
                return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.train_speed", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data",
        default=str(ROOT.parent / "shared" / "data"),
        help="benchmark data folder (default ../shared/data from the project root)",
    )
    ap.add_argument(
        "--store",
        default=os.environ.get("MMIRIS_STORE", str(ROOT / "mmiris-store")),
        help="artifact store for the ingested split",
    )
    ap.add_argument("--models", default=DEFAULT_MODELS, help="comma list of model:emb")
    ap.add_argument("--threads", type=int, default=0, help="torch/kernel threads (0: torch default)")
    ap.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="training precision policy (TrainConfig.precision)",
    )
    ap.add_argument("--paper-dims", action="store_true", help="features of the paper's sizes (2048, 768)")
    ap.add_argument("--fraction", type=float, default=0.02, help="share of the epoch's batches timed")
    ap.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    ap.add_argument(
        "--eval-models",
        default="nais_prod:16,multimodal_iris:16",
        help="models (model:emb, among --models) whose evaluation of all users is timed",
    )
    ap.add_argument("--no-eval", action="store_true", help="skip the evaluation timings")
    ap.add_argument(
        "--quality-epochs",
        type=int,
        default=0,
        help="instead of timing steps, train N whole epochs with the trainer and report the "
        "validation HR@10 / NDCG@10 (compare --dtype bf16 with --dtype fp32)",
    )
    args = ap.parse_args(argv)
    data = Path(args.data)
    needed = [
        data / "ml-1m-ncf" / f for f in ("ml-1m.train.rating", "ml-1m.test.rating", "ml-1m.test.negative", "items.tsv")
    ] + [data / "ml-1m" / "movies.dat"]
    absent = [str(f) for f in needed if not f.exists()]
    if absent:
        return _die(
            f"benchmark data not found: {', '.join(absent)} "
            "(pass --data pointing at the folder that holds ml-1m-ncf/ and ml-1m/)"
        )
    specs = []
    for spec in args.models.replace(" ", "").split(","):
        name, _, emb = spec.partition(":")
        if name not in ALL or not emb.isdigit():
            return _die(f"--models {spec!r}: expected model:emb with model one of {ALL}")
        specs.append((name, int(emb)))
    if not 0 < args.fraction <= 1:
        return _die(f"--fraction {args.fraction}: expected 0 < fraction <= 1")
    logging.basicConfig(level=logging.WARNING)
    from benchmarks.ml1m import prepare

    split_ref = prepare(args.store, data, [], ("", ""))["split"]
    opts = {
        "threads": args.threads,
        "dtype": args.dtype,
        "fraction": args.fraction,
        "warmup": args.warmup,
        "image_dim": 2048 if args.paper_dims else 1280,
        "text_dim": 768 if args.paper_dims else 384,
        "quality_epochs": args.quality_epochs,
        "eval": not args.no_eval,
        "eval_models": set(args.eval_models.replace(" ", "").split(",")),
    }
    import torch

    result = {
        "threads": args.threads or torch.get_num_threads(),
        "dtype": args.dtype,
        "image_dim": opts["image_dim"],
        "text_dim": opts["text_dim"],
        "fraction": args.fraction,
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "torch": torch.__version__,
        "split": split_ref,
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
    }
    ctx = mp.get_context("spawn")  # fresh process per model: own peak RSS, no forked thread pools
    failed = False
    for name, emb in specs:
        q = ctx.Queue()
        proc = ctx.Process(target=run_model, args=(args.store, split_ref, name, emb, opts, q))
        proc.start()
        row = _wait(proc, q) or {f"{name}_emb{emb}_error": f"process died with exit code {proc.exitcode}"}
        failed |= any(k.endswith("_error") for k in row)
        result.update(row)
    loads = [v for k, v in result.items() if k.endswith("_load_avg_before")]
    result["load_avg"] = max(loads) if loads else round(os.getloadavg()[0], 2)
    for name, emb in specs:  # ratios measured in this run
        e = result.get(f"{name}_emb{emb}_epoch_seconds")
        base = result.get(f"nais_concat_emb{emb}_epoch_seconds")
        if name in IRIS and emb == 16 and e and base:
            result[f"{name}_emb16_over_nais_concat_emb16"] = round(e / base, 2)
        e16 = result.get(f"{name}_emb16_epoch_seconds")
        if emb == 64 and e and e16:
            result[f"{name}_emb64_over_emb16"] = round(e / e16, 2)
    print(json.dumps(result))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
