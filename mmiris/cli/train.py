"""``mmiris train``: train (or fit) a model on a split and publish ``model-<name>``.

    mmiris train --split split@latest --model nais_prod --emb 16 --epochs 20
    torchrun --standalone --nproc_per_node 2 -m mmiris.train.launch --split split --model mf

The torchrun launcher (mmiris/train/launch.py) takes the same options and the configs as JSON;
under torchrun every rank runs it and rank 0 prints the published ref.
"""

from __future__ import annotations

from mmiris.artifacts import ArtifactStore
from mmiris.train.config import BATCH_ORDERS, LOSSES, PRECISIONS, SELECT_ON, TrainConfig

_T = TrainConfig()


def add_model_arguments(p, each: str) -> None:
    """The model's options, shared by ``mmiris train`` and ``mmiris tune`` (``each``: " of
    every trial" for tune): --model, --emb, --set, the feature artifacts, --init-from."""
    p.add_argument("--model", required=True, help="registry model name (itempop, mf, ease, fism, nais_prod, ...)")
    p.add_argument("--emb", type=int, default=None, help=f"embedding size k{each} (model default: 16)")
    p.add_argument(
        "--set",
        dest="model_set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help=f"model config field{each} (JSON value, e.g. --set beta=0.5); repeatable",
    )
    p.add_argument("--image-features", default=None, help="image_features artifact (image IRIS models, VBPR)")
    p.add_argument("--text-features", default=None, help="text_features artifact (text IRIS models)")
    p.add_argument(
        "--init-from",
        action="append",
        default=None,
        metavar="MODEL",
        help=f"published model{each} to start from (NAIS or IRIS from a model-fism); repeat for "
        "NeuMF: --init-from <gmf model> --init-from <mlp model>",
    )


def model_config_from(args, tuned: dict | None = None) -> dict:
    """Model config overrides from --set and --emb (over ``tuned``, a tune artifact's best)."""
    from mmiris.train.launch import parse_sets

    config = {**(tuned or {}), **parse_sets(args.model_set)}
    if args.emb is not None:
        config["emb"] = args.emb
    return config


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model on a split (also under torchrun: see docs/training.md)",
        description="Train or fit a registry model on a split artifact; publishes a model artifact.",
    )
    p.add_argument("--split", required=True, help="split artifact (split, split@latest, split@VERSION)")
    add_model_arguments(p, "")
    p.add_argument(
        "--params-from",
        default=None,
        metavar="TUNE",
        help="apply the best trial's fields of a tune artifact (mmiris tune); explicit "
        "--lr/--batch-size/--negatives/--loss/--batch-order, --emb and --set still win",
    )
    p.add_argument("--epochs", type=int, default=_T.epochs)
    # None = not given: --params-from may set these, else the TrainConfig default applies.
    p.add_argument("--batch-size", type=int, default=None, help=f"instances per global batch (default {_T.batch_size})")
    p.add_argument("--lr", type=float, default=None, help=f"Adam learning rate (default {_T.lr})")
    p.add_argument(
        "--negatives", type=int, default=None, help=f"K sampled negatives per positive (default {_T.negatives})"
    )
    p.add_argument("--loss", choices=LOSSES, default=None, help=f"(default {_T.loss})")
    p.add_argument(
        "--batch-order",
        choices=BATCH_ORDERS,
        default=None,
        help="user: each user's positives in one batch (NAIS); shuffled: users mixed (NCF, BPR); "
        "auto (default): user for models that read histories, shuffled for MF, VBPR, NeuMF",
    )
    p.add_argument(
        "--patience",
        type=int,
        default=_T.patience,
        help="early stopping: validations without a better HR@10 (epochs, unless --eval-steps)",
    )
    p.add_argument(
        "--negatives-from",
        choices=("all", "trained"),
        default=_T.negatives_from,
        help="all (default): negatives from the whole catalogue; trained: only items with training "
        "interactions (a cold-item split: its held-out items are never trained as negatives)",
    )
    p.add_argument(
        "--select-on",
        choices=SELECT_ON,
        default=_T.select_on,
        help="warm (default): early stopping on validation HR@10 as the model scores; cold: with every "
        "candidate scored as a new item (models with a content path: hybrid_iris, vbpr) — for a "
        "cold-item split, where every test item is new",
    )
    p.add_argument("--seed", type=int, default=_T.seed)
    p.add_argument("--eval-every", type=int, default=_T.eval_every, help="validate every N epochs")
    p.add_argument(
        "--eval-steps",
        type=int,
        default=_T.eval_steps,
        help="also validate every N optimiser steps inside an epoch (0, the default: at epoch ends only); "
        "the best validation's state is kept and --patience counts these validations too",
    )
    p.add_argument(
        "--ema",
        type=float,
        default=_T.ema,
        help="validate and publish a moving average of the parameters with this decay per step "
        "(e.g. 0.999; 0, the default: the parameters themselves)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=_T.precision,
        help="dense matmuls in bf16 autocast or fp32; auto: bf16 for IRIS on CPUs with native bf16 "
        "(see docs/models.md, Training speed)",
    )
    p.add_argument("--device", default=_T.device, help="auto (cuda if available), cpu or cuda")
    p.add_argument("--threads", type=int, default=_T.threads, help="torch threads per process (0: default)")
    p.add_argument("--checkpoint-dir", default=None, help="default: <store>/_checkpoints/<model artifact>-<version>")
    p.add_argument("--checkpoint-steps", type=int, default=0, help="also checkpoint every N steps")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint of a killed run")
    p.set_defaults(func=run)


def run(args) -> int:
    from mmiris.train.launch import train_stage

    # Precedence: defaults < --params-from (best trial of a tune artifact) < explicit flags, --emb, --set.
    tuned_model: dict = {}
    tuned_train: dict = {}
    if args.params_from:
        from mmiris.train.tuning import best_params

        tuned_model, tuned_train = best_params(ArtifactStore(), args.params_from, args.model)
    for key in ("lr", "batch_size", "negatives", "loss", "batch_order"):
        if getattr(args, key) is None:
            setattr(args, key, tuned_train.get(key, getattr(_T, key)))
    cfg = TrainConfig(
        lr=args.lr,
        batch_size=args.batch_size,
        epochs=args.epochs,
        negatives=args.negatives,
        loss=args.loss,
        batch_order=args.batch_order,
        patience=args.patience,
        select_on=args.select_on,
        negatives_from=args.negatives_from,
        seed=args.seed,
        eval_every=args.eval_every,
        eval_steps=args.eval_steps,
        ema=args.ema,
        device=args.device,
        threads=args.threads,
        checkpoint_steps=args.checkpoint_steps,
        precision=args.precision,
    )
    train_stage(args, model_config_from(args, tuned_model), cfg)
    return 0
