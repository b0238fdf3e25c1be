"""``mmiris tune``: an Optuna search over a model's hyperparameters, scored on validation items.

    mmiris tune --split split --model nais_prod --trials 20 --init-from model-fism --epochs 10
    mmiris tune --split split --model fism --space lr=1e-4:1e-2:log --space batch_size=256,512 --only lr,batch_size
    mmiris tune --model multimodal_iris --show-space          # print the default space and exit

Rerunning the same command continues the study (``<store>/_tune/<study>.db``) and runs only
the trials still missing. Prints the published ``tune-<model>@<version>`` last; feed it to
``mmiris train --params-from``. Grammar and details: docs/training.md "Tuning".
"""

from __future__ import annotations

import json

from mmiris.artifacts import ArtifactStore
from mmiris.cli.train import add_model_arguments, model_config_from
from mmiris.errors import MmirisError
from mmiris.train.config import BATCH_ORDERS, PRECISIONS, TrainConfig

_T = TrainConfig()


def register(sub) -> None:
    p = sub.add_parser(
        "tune",
        help="search a model's hyperparameters on the validation items (Optuna)",
        description="Optuna search (TPE sampler, median pruner) over a model's learning rate, "
        "λ terms, β, attention size and batch size, scored on the split's validation "
        "items; resumable; publishes the trials table as tune-<model>.",
    )
    p.add_argument("--split", default=None, help="split artifact (split, split@latest, split@VERSION)")
    p.add_argument(
        "--trials", type=int, default=20, help="finished (complete or pruned) trials the study should hold (default 20)"
    )
    p.add_argument(
        "--space",
        action="append",
        default=[],
        metavar="NAME=SPEC",
        help="replace or add a searched field: LOW:HIGH, LOW:HIGH:log, LOW:HIGH:int, A,B,C "
        "(choices), V (fixed) or off (drop a default); repeatable",
    )
    p.add_argument(
        "--space-file",
        default=None,
        metavar="JSON",
        help='JSON object NAME -> SPEC string, list of choices, {"low", "high", "log"} or null '
        "(applied before --space)",
    )
    p.add_argument("--only", default=None, metavar="NAME,...", help="search only these fields")
    p.add_argument("--show-space", action="store_true", help="print the resolved search space as JSON and exit")
    add_model_arguments(p, " of every trial")
    p.add_argument("--epochs", type=int, default=_T.epochs, help="epoch cap per trial")
    p.add_argument("--patience", type=int, default=_T.patience, help="early stopping per trial")
    p.add_argument("--lr", type=float, default=_T.lr, help="when lr is not searched (and the baseline trial's)")
    p.add_argument("--batch-size", type=int, default=_T.batch_size, help="when batch_size is not searched")
    p.add_argument("--negatives", type=int, default=_T.negatives)
    p.add_argument("--loss", default=_T.loss)
    p.add_argument("--batch-order", choices=BATCH_ORDERS, default=_T.batch_order, help="as mmiris train")
    p.add_argument("--seed", type=int, default=_T.seed, help="training seed of every trial")
    p.add_argument("--sampler", choices=("tpe", "random"), default="tpe")
    p.add_argument("--sampler-seed", type=int, default=0)
    p.add_argument("--pruner", choices=("median", "none"), default="median")
    p.add_argument(
        "--startup-trials", type=int, default=3, help="complete trials before the pruner stops any (default 3)"
    )
    p.add_argument(
        "--warmup-epochs",
        type=int,
        default=0,
        help="epochs every trial runs before it can be pruned (default 0: pruned after epoch 1)",
    )
    p.add_argument(
        "--no-baseline", action="store_true", help="do not start a new study with the unchanged settings as trial 0"
    )
    p.add_argument("--study", default=None, help="study name (default: <model>-<split name>-<hash of the settings>)")
    p.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL (default: sqlite:///<store>/_tune/<study>.db for a local store)",
    )
    p.add_argument("--timeout", type=float, default=None, help="stop starting trials after this many seconds")
    p.add_argument(
        "--fail-running",
        action="store_true",
        help="mark trials other workers left running as failed (when you know they died)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=_T.precision,
        help="as mmiris train: bf16 autocast, fp32 or auto (part of the study's settings)",
    )
    p.add_argument("--device", default=_T.device, help="auto (cuda if available), cpu or cuda")
    p.add_argument("--threads", type=int, default=_T.threads, help="torch threads (0: default)")
    p.set_defaults(func=run)


def parse_space(items: list[str], path: str | None) -> dict:
    """``--space-file`` then ``--space NAME=SPEC`` items (later wins) → {name: spec}."""
    space: dict = {}
    if path:
        try:
            with open(path) as f:
                raw = json.load(f)
        except OSError as exc:
            raise MmirisError(f"--space-file {path}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise MmirisError(f"--space-file {path}: line {exc.lineno}: invalid JSON ({exc.msg})") from None
        if not isinstance(raw, dict):
            raise MmirisError(f"--space-file {path}: expected a JSON object NAME -> SPEC")
        space.update(raw)
    for item in items:
        name, sep, spec = item.partition("=")
        if not sep or not name.strip() or not spec.strip():
            raise MmirisError(f"--space {item!r}: expected NAME=SPEC (e.g. lr=1e-4:1e-2:log or beta=0.5,0.8)")
        space[name.strip()] = spec.strip()
    return space


def run(args) -> int:
    from mmiris.pipelines.tune import tune_model
    from mmiris.train.search_space import search_space

    space = parse_space(args.space, args.space_file)
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    model_config = model_config_from(args)
    cfg = TrainConfig(
        lr=args.lr,
        batch_size=args.batch_size,
        epochs=args.epochs,
        negatives=args.negatives,
        loss=args.loss,
        batch_order=args.batch_order,
        patience=args.patience,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        precision=args.precision,
    )
    if args.show_space:
        params = search_space(args.model, space, only, model_config, cfg)
        # One line per field; the output is a valid --space-file.
        print(
            "{\n"
            + ",\n".join(f"  {json.dumps(p.name)}: {json.dumps({**p.to_dict(), 'target': p.target})}" for p in params)
            + "\n}"
        )
        return 0
    if not args.split:
        raise MmirisError("--split is required (unless --show-space)")
    store = ArtifactStore()
    ref = tune_model(
        store,
        args.split,
        args.model,
        n_trials=args.trials,
        space=space,
        only=only,
        model_config=model_config or None,
        train_config=cfg,
        image_features=args.image_features,
        text_features=args.text_features,
        init_from=args.init_from,
        sampler=args.sampler,
        sampler_seed=args.sampler_seed,
        pruner=args.pruner,
        startup_trials=args.startup_trials,
        warmup_epochs=args.warmup_epochs,
        baseline=not args.no_baseline,
        study_name=args.study,
        storage=args.storage,
        timeout=args.timeout,
        fail_running=args.fail_running,
    )
    m = store.manifest(ref)
    print(
        f"trials: {m.stats.get('n_complete', 0)} complete, {m.stats.get('n_pruned', 0)} pruned, "
        f"{m.stats.get('n_fail', 0)} failed"
    )
    if "best_params" in m.stats:
        print(
            f"best: trial {m.stats['best_trial']}, validation HR@10 {m.stats['best_value']:.4f}, "
            + json.dumps(m.stats["best_params"], sort_keys=True)
        )
    print(ref)
    return 0
