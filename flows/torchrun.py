"""Run the trainer under ``torchrun --standalone`` from a flow, streaming its output to the
flow's logs (so the ranks' progress is in the Prefect UI)."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import fields

from prefect import get_run_logger

from mmiris.errors import MmirisError
from mmiris.train.config import TrainConfig

_REF = re.compile(r"^(model-[\w.\-]+@[0-9a-f]+)$")
_NO_FLAG = {"eval_batch_pairs"}  # TrainConfig fields `mmiris train` has no option for


def train_argv(
    split: str,
    model: str,
    model_settings: dict | None,
    train_settings: dict | None,
    image_features: str | None,
    text_features: str | None,
    init_from: str | list[str] | None,
    resume: bool,
    store: str | None,
) -> list[str]:
    """The ``mmiris train`` options for these flow parameters."""
    import json

    argv = ["--split", split, "--model", model]
    if store:
        argv += ["--store", store]
    for key, value in (model_settings or {}).items():
        argv += ["--set", f"{key}={json.dumps(value)}"]
    known = {f.name for f in fields(TrainConfig)}
    for key, value in (train_settings or {}).items():
        if key not in known:
            raise MmirisError(f"train_settings: unknown field {key!r}; known: {sorted(known)}")
        if key in _NO_FLAG:
            raise MmirisError(
                f"train_settings: {key} cannot be passed to torchrun ranks; drop it or use nproc_per_node=1"
            )
        argv += [f"--{key.replace('_', '-')}", str(value)]
    if image_features:
        argv += ["--image-features", image_features]
    if text_features:
        argv += ["--text-features", text_features]
    for ref in [init_from] if isinstance(init_from, str) else init_from or []:
        argv += ["--init-from", ref]
    if resume:
        argv.append("--resume")
    return argv


def run_torchrun(nproc_per_node: int, trainer_argv: list[str]) -> str:
    """``torchrun --standalone --nproc_per_node N -m mmiris.train.launch ...``; returns the
    model ref rank 0 prints. A failed rank fails the task with torchrun's root cause."""
    log = get_run_logger()
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc_per_node}",
        "-m",
        "mmiris.train.launch",
        *trainer_argv,
    ]
    log.info("launching %s", " ".join(cmd[1:]))
    ref: str | None = None
    tail: list[str] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        assert proc.stdout is not None  # stdout=PIPE
        for line in proc.stdout:
            line = line.rstrip()
            if m := _REF.match(line):
                ref = m.group(1)
            log.info("%s", line)
            tail = (tail + [line])[-20:]
        rc = proc.wait()
    if rc != 0 or ref is None:
        raise RuntimeError(
            f"torchrun exited with {rc}" + ("" if ref else " without a model ref") + ":\n" + "\n".join(tail)
        )
    return ref
