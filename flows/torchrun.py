"""Run the trainer under ``torchrun --standalone`` from a flow, streaming its output to the
flow's logs (so the ranks' progress is in the Prefect UI)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from prefect import get_run_logger

_REF = re.compile(r"^(model-[\w.\-]+@[0-9a-f]+)$")


def train_argv(
    split: str,
    model: str,
    model_config: dict | None,
    train_config: dict | None,
    *,
    store: str | None = None,
    image_features: str | None = None,
    text_features: str | None = None,
    init_from: str | list[str] | None = None,
    resume: bool = False,
) -> list[str]:
    """The launcher's arguments for these flow parameters: the configs go as JSON, unchanged
    (``mmiris.train.launch`` builds the typed configs, and says what is wrong with them)."""
    argv = ["--split", split, "--model", model]
    if store:
        argv += ["--store", store]
    argv += ["--model-config", json.dumps(model_config or {}), "--train-config", json.dumps(train_config or {})]
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
