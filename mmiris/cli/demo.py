"""``mmiris demo``: the whole pipeline on the embedded, generated catalogue (no internet).

    mmiris demo                       # ~300 users × 200 items, a few minutes on 2 cores
    mmiris demo --users 60 --items 50 --epochs 2 --models itempop,nais_prod   # seconds

Artifacts go to the store (``--store``, ``$MMIRIS_STORE`` or ./mmiris-store); the HTML
report to ``--out`` (./mmiris-demo).
"""

from __future__ import annotations

import logging
import os
import time

from mmiris.artifacts import ArtifactStore
from mmiris.errors import MmirisError


def _defaults():
    from mmiris.pipelines.demo import DemoOptions

    return DemoOptions()


def register(sub) -> None:
    d = _defaults()
    p = sub.add_parser(
        "demo",
        help="run the whole pipeline on the embedded generated data (start here)",
        description="Generate the demo catalogue, split, extract features, train and evaluate "
        "a few models, recommend with explanations and write an HTML report.",
    )
    p.add_argument("--out", default="mmiris-demo", help="where the report goes (default ./mmiris-demo)")
    p.add_argument("--users", type=int, default=d.n_users, help=f"generated users (default {d.n_users})")
    p.add_argument("--items", type=int, default=d.n_items, help=f"generated items (default {d.n_items})")
    p.add_argument(
        "--models", default=",".join(d.models), help=f"comma-separated registry models (default {','.join(d.models)})"
    )
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"training epochs per model (default {d.epochs})")
    p.add_argument("--emb", type=int, default=d.emb, help=f"embedding size (default {d.emb})")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--image-encoder", default=d.image_encoder, help="offline default: efficientnet-lite0")
    p.add_argument("--text-encoder", default=d.text_encoder, help="offline default: minilm")
    p.add_argument(
        "--workers",
        type=int,
        default=d.feature_workers,
        help="Dask workers for feature extraction (default: one per core)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from dataclasses import replace

    from mmiris.pipelines.demo import run_demo

    for opt, value, least in (
        ("--users", args.users, 2),
        ("--items", args.items, 10),
        ("--epochs", args.epochs, 1),
        ("--emb", args.emb, 1),
    ):
        if value < least:
            raise MmirisError(f"{opt} {value}: expected at least {least}")
    if args.workers is not None and args.workers < 1:
        raise MmirisError(f"--workers {args.workers}: expected at least 1")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise MmirisError(f"--out {args.out}: is a file, expected a folder for the report")
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    if not models:
        raise MmirisError("--models: name at least one model, e.g. itempop,nais_prod")
    from mmiris.models import get_model_class

    for name in models:
        try:
            get_model_class(name)
        except KeyError as exc:
            raise MmirisError(f"--models: {exc.args[0]}") from None
    opt = replace(
        _defaults(),
        n_users=args.users,
        n_items=args.items,
        models=models,
        epochs=args.epochs,
        emb=args.emb,
        seed=args.seed,
        image_encoder=args.image_encoder,
        text_encoder=args.text_encoder,
        feature_workers=args.workers,
    )
    if not args.verbose:  # the step lines below are the story; stage logs only with -v
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")  # read by Dask at import, and by workers
        logging.getLogger().setLevel(logging.WARNING)
        for name in ("distributed", "prefect"):
            logging.getLogger(name).setLevel(logging.ERROR)
    store = ArtifactStore()
    print(
        f"mmiris demo: the embedded, GENERATED catalogue ({opt.n_users} users × {opt.n_items} items; "
        f"posters and plots drawn from latent genres), no internet needed"
    )
    print(f"  store: {store.uri}   models: {', '.join(models)}   (add -v for stage logs)\n")
    t0 = time.perf_counter()
    res = run_demo(store, args.out, opt)
    total = time.perf_counter() - t0

    print(f"\nTest metrics ({res.split}; {res.n_negatives} sampled negatives per user, and full ranking):")
    print(f"  {'model':<20} {'HR@10':>7} {'NDCG@10':>8}   {'HR@10 full':>10} {'NDCG@10 full':>12}")
    for r in res.table:
        print(
            f"  {r['model']:<20} {_f(r['hr10']):>7} {_f(r['ndcg10']):>8}   {_f(r['hr10_full']):>10} "
            f"{_f(r['ndcg10_full']):>12}"
        )
    rec_model, rec_ref = next(iter(res.recommendations.items()))
    print(f"\nDone in {total:.0f}s.")
    print(f"  report:          {res.report.resolve()}")
    print(f"                   (open {res.report.resolve().as_uri()} in a browser; self-contained)")
    print(f"  artifacts:       {store.uri}   (mmiris artifacts ls)")
    print(f"  recommendations: {rec_ref}")
    store_opt = f"--store {args.store} " if args.store else ""
    print(f"  try:             mmiris {store_opt}recommend --model {res.models[rec_model].name} --user 0")
    print(f"                   mmiris {store_opt}report --out {args.out}")
    return 0


def _f(v) -> str:
    return "–" if v is None else f"{v:.4f}"
