"""Benchmark: top-10 recommendations with top-3 explanations for every ML-1M user.

    python -m benchmarks.recommend [--data ../shared/data] [--users N]
    python -m benchmarks.recommend --store STORE --model model-multimodal_iris   # a trained model

The users' histories are the real ML-1M NCF training split, ingested from
``<data>/ml-1m-ncf`` with the ingest stage into a temporary store. The model is either a
trained one from ``--store``/``--model`` (its own split and features), or — without
``--model`` — an *untrained* Multimodal IRIS of ML-1M shape on random image (1280-d,
EfficientNet-Lite0 size) and text (384-d, MiniLM size) features: the work of scoring and
explaining is the same for trained and untrained weights, but the recommendations are not
meaningful. ``--users`` shortens a run. The last line is one JSON object: ``users``,
``users_per_s``, ``seconds`` (scoring + top-N + explanations, excluding loading), plus
``trained``, ``model`` and the table ``rows``.
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
import torch

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.recommend", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data",
        default=str(ROOT.parent / "shared" / "data"),
        help="benchmark data folder (default ../shared/data from the project root)",
    )
    p.add_argument("--store", default=None, help="store holding --model (default: a temporary store)")
    p.add_argument("--model", default=None, help="trained model artifact in --store (default: untrained, see doc)")
    p.add_argument("--model-name", default="multimodal_iris", help="registry model when untrained")
    p.add_argument("--emb", type=int, default=16, help="embedding size when untrained (paper: 16, 64)")
    p.add_argument("--users", type=int, default=None, help="only the first N users (shortens a run)")
    p.add_argument("--top-n", type=int, default=10)
    p.add_argument("--explain-k", type=int, default=3)
    p.add_argument("--batch-users", type=int, default=256)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    if args.threads:
        torch.set_num_threads(args.threads)

    from mmiris.artifacts import ArtifactStore
    from mmiris.data.modality import ItemModality
    from mmiris.data.split import load_split
    from mmiris.models.build import build_model
    from mmiris.recommend.topn import consumed_history, recommend_top_n

    t_load = time.perf_counter()
    if args.model:
        if not args.store:
            print("--model needs --store (the store the model was published to)", file=sys.stderr)
            return 2
        from mmiris.pipelines.recommend import load_trained_model, model_split

        store = ArtifactStore(args.store)
        model = load_trained_model(store, store.resolve(args.model))
        split = load_split(store, model_split(store, store.resolve(args.model)))
        trained, label = True, str(store.resolve(args.model))
    else:
        ncf = Path(args.data) / "ml-1m-ncf"
        files = [ncf / f"ml-1m.{s}" for s in ("train.rating", "test.rating", "test.negative")]
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            print(
                f"benchmark data not found: {', '.join(missing)} (pass --data DIR holding ml-1m-ncf/)", file=sys.stderr
            )
            return 2
        from mmiris.pipelines.ingest import ingest_ncf

        store = ArtifactStore(args.store or tempfile.mkdtemp(prefix="mmiris-bench-recommend-"))
        split = load_split(store, ingest_ncf(store, *files).split)
        gen = torch.Generator().manual_seed(0)
        feats = {
            name: ItemModality(
                name,
                torch.randn(split.n_items, dim, generator=gen),
                torch.ones(split.n_items, dtype=torch.bool),
                "random",
            )
            for name, dim in (("image", 1280), ("text", 384))
        }
        torch.manual_seed(0)
        model = build_model(args.model_name, {"emb": args.emb}, split.n_users, split.n_items, split.history(), feats)
        trained, label = False, f"{args.model_name} (untrained, emb {args.emb}, random features)"
    consumed = consumed_history(
        split.n_users,
        split.n_items,
        (split.train_users, split.train_items),
        (split.valid_users, split.valid_items),
        (split.test_users, split.test_items),
    )
    users = np.arange(split.n_users if args.users is None else min(args.users, split.n_users))
    load_seconds = time.perf_counter() - t_load

    t0 = time.perf_counter()
    recs = recommend_top_n(
        model, consumed, users, top_n=args.top_n, explain_k=args.explain_k, batch_users=args.batch_users
    )
    table = recs.to_table()
    seconds = time.perf_counter() - t0
    explained = recs.explain_items is not None and bool((recs.explain_items[:, :, 0] >= 0).all())
    result = {
        "users": int(len(users)),
        "users_per_s": round(len(users) / seconds, 2),
        "seconds": round(seconds, 2),
        "items": int(split.n_items),
        "top_n": args.top_n,
        "explain_k": args.explain_k,
        "rows": table.num_rows,
        "all_explained": explained,
        "model": label,
        "trained": trained,
        "load_seconds": round(load_seconds, 2),
        "torch_threads": torch.get_num_threads(),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(result))
    return 0 if explained or not model.has_attention else 1


if __name__ == "__main__":
    sys.exit(main())
