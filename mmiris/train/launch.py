"""Entry point for torchrun: the train stage on every rank, with torchrun's error recording.

    torchrun --standalone --nproc_per_node 2 -m mmiris.train.launch [--store S] --split split --model mf
    torchrun --nnodes 2 --node_rank R --nproc_per_node 1 --rdzv_backend c10d \\
        --rdzv_endpoint HOST:PORT --rdzv_id run1 -m mmiris.train.launch --split split --model mf \\
        --train-config '{"epochs": 20, "lr": 0.001}' --model-config '{"emb": 64}'

The configs travel whole, as JSON (``--train-config``/``--model-config``, a JSON object or
``@file.json``): a program (the Prefect flow) passes them as they are, with no flag to keep in
step with a field. For people and job scripts every ``TrainConfig`` field is also an option
(``--epochs 20``; made from the dataclass, so a new field is one without an edit here) and
``--emb``/``--set FIELD=VALUE`` set model fields. Precedence: defaults < ``--params-from``
(the best trial of a tune artifact) < the JSON configs < single options.

Every rank calls ``mmiris.pipelines.train.train_model``; rank 0 prints the published ref.
``@record`` makes torchrun print the failing rank's exception as the root cause of a failed
group. Exit codes as ``mmiris``: 2 for a problem to fix (one line), 1 with a traceback for a bug.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from torch.distributed.elastic.multiprocessing.errors import record

from mmiris.errors import MmirisError
from mmiris.train.config import TrainConfig


def json_object(text: str) -> dict[str, Any]:
    """``--*-config`` values: a JSON object, or ``@path`` to a file holding one."""
    where = "config"
    if text.startswith("@"):
        where = text[1:]
        try:
            text = Path(where).read_text()
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"{where}: {exc.strerror}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"{where}: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mmiris.train.launch",
        description="Train a registry model on a split on every torchrun rank; rank 0 publishes and prints the ref.",
    )
    p.add_argument("--store", default=None, help="artifact store path or URI (default: $MMIRIS_STORE)")
    p.add_argument("--split", required=True, help="split artifact")
    p.add_argument("--model", required=True, help="registry model name")
    p.add_argument("--image-features", default=None)
    p.add_argument("--text-features", default=None)
    p.add_argument("--init-from", action="append", default=None, metavar="MODEL", help="repeatable")
    p.add_argument("--params-from", default=None, metavar="TUNE", help="the best trial of a tune artifact")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint of a killed run")
    p.add_argument("--checkpoint-dir", default=None)
    p.add_argument("--train-config", type=json_object, default={}, metavar="JSON", help="TrainConfig fields")
    p.add_argument("--model-config", type=json_object, default={}, metavar="JSON", help="model config fields")
    p.add_argument("--emb", type=int, default=None, help="model embedding size k")
    p.add_argument("--set", dest="model_set", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("-v", "--verbose", action="store_true")
    fields = p.add_argument_group("TrainConfig fields (mmiris/train/config.py)")
    for f in dataclasses.fields(TrainConfig):
        kind = type(f.default)
        fields.add_argument(
            f"--{f.name.replace('_', '-')}", dest=f"train_{f.name}", metavar=f.name.upper(), type=kind, default=None
        )
    return p


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``FIELD=VALUE`` items (VALUE as JSON, else a string) as a dict."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MmirisError(f"--set {item!r}: expected FIELD=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def configs(args: argparse.Namespace, tuned: tuple[dict, dict] = ({}, {})) -> tuple[dict, TrainConfig]:
    """(model config overrides, TrainConfig) from parsed options; ``tuned``: a tune artifact's
    best (model fields, train fields)."""
    given = {f.name: v for f in dataclasses.fields(TrainConfig) if (v := getattr(args, f"train_{f.name}")) is not None}
    train = TrainConfig.from_dict({**tuned[1], **args.train_config, **given})
    model = {**tuned[0], **args.model_config, **parse_sets(args.model_set)}
    if args.emb is not None:
        model["emb"] = args.emb
    return model, train


@record
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if args.store:
        os.environ["MMIRIS_STORE"] = args.store
    try:
        return run(args)
    except MmirisError as exc:  # as `mmiris`: a problem to fix is one line; a bug raises with its traceback
        print(f"mmiris.train.launch: error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    from mmiris.artifacts import ArtifactStore
    from mmiris.train.tuning import best_params

    tuned = best_params(ArtifactStore(), args.params_from, args.model) if args.params_from else ({}, {})
    model_config, train_config = configs(args, tuned)
    train_stage(args, model_config, train_config)
    return 0


def train_stage(args: argparse.Namespace, model_config: dict, train_config: TrainConfig) -> None:
    """The train stage on this rank with the configs and the stage's arguments in ``args``
    (those of this launcher or of ``mmiris train``)."""
    from mmiris.artifacts import ArtifactStore
    from mmiris.pipelines.train import train_on_this_rank

    train_on_this_rank(
        ArtifactStore(),
        args.split,
        args.model,
        model_config=model_config or None,
        train_config=train_config,
        image_features=args.image_features,
        text_features=args.text_features,
        resume=args.resume,
        checkpoint_dir=args.checkpoint_dir,
        init_from=args.init_from,
    )


def exit_worker(code: int) -> NoReturn:
    """Leave a torchrun worker without Python's interpreter finalization: flush what it
    wrote, then ``os._exit``. Now and then (once in CI, once in 83 runs of the 2-rank
    gloo test group on a loaded 2-core machine) rank 1 aborted with SIGABRT, "terminate
    called without an active exception", after rank 0 had published and both had left the
    group, with no Python frame on any thread: most likely native objects torn down with the
    interpreter (pytorch/pytorch#179291 describes the same class of crash). torchrun then
    fails the whole job. Everything a rank owes is done by then, so skipping finalization
    loses nothing."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said there
            pass
    os._exit(code)


if __name__ == "__main__":
    exit_worker(main() or 0)
