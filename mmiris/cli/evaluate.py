"""``mmiris evaluate``: sampled and full-ranking HR@N / NDCG@N of a model → ``metrics-<name>``.

mmiris evaluate --model model-nais_prod            # on the split it was trained on
mmiris evaluate --model model-mf --protocol sampled --part valid
"""

from __future__ import annotations

from mmiris.artifacts import ArtifactStore


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="HR@N and NDCG@N of a model (sampled 1+99 and full ranking)",
        description="Evaluate a model artifact; publishes a metrics artifact and prints the table.",
    )
    p.add_argument("--model", required=True, help="model artifact (model-mf, model-mf@VERSION)")
    p.add_argument("--split", default=None, help="split artifact (default: the model's own split)")
    p.add_argument(
        "--protocol", action="append", choices=("sampled", "full"), default=None, help="repeatable; default: both"
    )
    p.add_argument("--part", choices=("test", "valid"), default="test")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    p.set_defaults(func=run)


def run(args) -> int:
    from mmiris.pipelines.evaluate import evaluate_model, read_metrics

    store = ArtifactStore()
    ref = evaluate_model(
        store,
        store.resolve(args.model),
        args.split,
        protocols=tuple(args.protocol or ("sampled", "full")),
        part=args.part,
        device=args.device,
    )
    table = read_metrics(store, ref)
    keys = ["hr5", "ndcg5", "hr10", "ndcg10", "hr20", "ndcg20"]
    print(f"{'protocol':<10}" + "".join(f"{k:>9}" for k in keys))
    for proto, m in table.items():
        print(f"{proto:<10}" + "".join(f"{m[k]:>9.4f}" for k in keys))
    print(ref)
    return 0
