"""Evaluate a training checkpoint (the state after an epoch, before training stops) on a split.

    python -m benchmarks.checkpoint_eval --store STORE --checkpoint STORE/_checkpoints/model-hybrid_iris-V \\
        --model hybrid_iris --split split_cold@V --features ml1m_image_features@V ml1m_text_features@V

A run that stops early publishes only its best-validation state; a run on a cold-item split
validates on warm items, so how the cold test cases fare epoch by epoch is seen only here.
Builds ``--model`` with ``--config`` (the checkpoint stores the weights, not the config: give
the settings the run used), loads the checkpoint's weights and evaluates the split's test
cases with the evaluate stage's sampled protocol. Nothing is published. Prints one JSON line
``{"checkpoint", "split", "epoch", "best_epoch", "hr10", "ndcg10"[, "target_share"][, "label"]}``
and appends it to ``--out`` (JSON lines) when given. ``--attention-users N`` adds the
attention target share of ``benchmarks.attention_spread`` (N users × 20 targets): whether
an attentive model's attention has collapsed to item-independent weights at that epoch.
``--zero NAME ...`` evaluates an ablation: those parameters or buffers are zeroed after loading
(e.g. ``content_q.weight`` leaves a Hybrid IRIS's cold items only their similarity term).
``--cases valid`` ranks the validation cases instead, as model selection sees them (on a
cold-item split its warm items scored as new items), so an ablation can be chosen there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.checkpoint_eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--store", default=os.environ.get("MMIRIS_STORE", str(ROOT / "mmiris-store")))
    p.add_argument("--checkpoint", required=True, help="a training checkpoint folder (STORE/_checkpoints/...)")
    p.add_argument("--model", required=True)
    p.add_argument("--config", default='{"emb": 16}', help="the model settings the run used (JSON)")
    p.add_argument("--split", required=True)
    p.add_argument("--features", nargs="*", default=[], help="the run's feature artifacts")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="append the JSON line to this file")
    p.add_argument("--label", default=None, help="a note kept in the row (e.g. the commit and settings)")
    p.add_argument(
        "--attention-users", type=int, default=0, help="also the attention target share over N users (0: no)"
    )
    p.add_argument(
        "--cases",
        choices=("test", "valid"),
        default="test",
        help="which cases to rank; valid on a cold-item split scores its warm items as new items (their free "
        "target rows zeroed, as select_on cold does)",
    )
    p.add_argument(
        "--zero",
        nargs="*",
        default=[],
        metavar="NAME",
        help="an ablation: these parameters or buffers (state-dict names, e.g. content_q.weight) are set to 0 "
        "after loading; the row lists them",
    )
    args = p.parse_args(argv)
    import torch

    from mmiris.artifacts import ArtifactRef, ArtifactStore
    from mmiris.data.split import load_split
    from mmiris.eval.metrics import metrics_from_ranks
    from mmiris.eval.protocols import sampled_ranks
    from mmiris.models.base import targets_as_new
    from mmiris.models.build import build_model, load_features
    from mmiris.train.checkpoint import load_checkpoint

    torch.set_num_threads(args.threads)
    store = ArtifactStore(args.store)
    split = load_split(store, ArtifactRef.parse(args.split))
    feats = load_features(store, [ArtifactRef.parse(f) for f in args.features], split.n_items)
    state = load_checkpoint(args.checkpoint)
    if state is None:
        raise SystemExit(f"no checkpoint in {args.checkpoint}")
    if state["model"] != args.model:
        raise SystemExit(f"{args.checkpoint} is a {state['model']} checkpoint, not {args.model}")
    model = build_model(args.model, json.loads(args.config), split.n_users, split.n_items, split.history(), feats)
    model.load_state_dict(state["model_state"])
    tensors = model.state_dict(keep_vars=True)
    unknown = [n for n in args.zero if n not in tensors]
    if unknown:
        raise SystemExit(f"--zero {' '.join(unknown)}: not in the {args.model} model (it has: {', '.join(tensors)})")
    with torch.no_grad():
        for n in args.zero:
            tensors[n].zero_()
    model.eval()
    cases = {
        "test": (split.test_users, split.test_items, split.test_negatives),
        "valid": (split.valid_users, split.valid_items, split.valid_negatives),
    }[args.cases]
    cold = store.manifest(ArtifactRef.parse(args.split)).stats.get("setting") == "cold"
    as_new = targets_as_new(model) if args.cases == "valid" and cold else contextlib.nullcontext()
    with torch.no_grad(), as_new:
        r = sampled_ranks(model, *cases)
    m = metrics_from_ranks(r.ranks)
    share = None
    if args.attention_users:
        from benchmarks.attention_spread import model_target_share

        with torch.no_grad():
            share = model_target_share(model, args.attention_users, 20, 0)["target_share"]
    row = {
        "checkpoint": args.checkpoint,
        "split": args.split,
        "epoch": state["state"]["epoch"],
        "best_epoch": state["state"]["best_epoch"],
        **({"cases": "valid"} if args.cases == "valid" else {}),
        "hr10": round(m["hr10"], 4),
        "ndcg10": round(m["ndcg10"], 4),
        **({"target_share": share} if share is not None else {}),
        **({"zeroed": args.zero} if args.zero else {}),
        **({"label": args.label} if args.label else {}),
    }
    print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
