"""Real processes: torchrun with 2 ranks on one node (one rank SIGKILLed, torchrun restarts
the group from the last checkpoint), 2 "nodes" over a c10d rendezvous on 127.0.0.1, and a
single process SIGKILLed mid-epoch then resumed with --resume. All against one in-process run
with the same seed and global batch.

Tolerance (docs/training.md): DDP sums the ranks' gradients in a different order than one
process, so parameters may differ by float rounding — we allow 1e-4 absolute on every
parameter and 1e-4 on every validation metric; a resumed single process must be identical.
"""

import glob
import io
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import psutil
import pytest
import torch
from test_train_trainer import publish_tiny_split
from waiting import PATIENCE_S, wait_until

from mmiris.artifacts import ArtifactStore
from mmiris.train.config import TrainConfig

pytestmark = pytest.mark.slow

EPOCHS = 2
ARGS = [
    "--split",
    "split",
    "--model",
    "mf",
    "--emb",
    "8",
    "--epochs",
    str(EPOCHS),
    "--patience",
    "9",
    "--batch-size",
    "64",
    "--lr",
    "0.02",
    "--threads",
    "1",
]
CFG = TrainConfig(epochs=EPOCHS, patience=9, batch_size=64, lr=0.02, threads=1)
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
ATOL = 1e-4


def _store(path) -> ArtifactStore:
    store = ArtifactStore(path)
    publish_tiny_split(store, n_users=150)
    return store


def _env():
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _result(store):
    ref = store.latest("model-mf")
    blob = torch.load(io.BytesIO(store.read_file(ref, "model.pt")), weights_only=False)
    log = store.read_table(ref, "training_log").to_pylist()
    metrics = {(r["epoch"], r["metric"]): r["value"] for r in log if r["metric"] and r["metric"] != "epoch_seconds"}
    losses = [r["loss"] for r in log if r["loss"] is not None]
    return blob["state_dict"], metrics, losses, store.manifest(ref)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from mmiris.pipelines.train import train_model

    store = _store(tmp_path_factory.mktemp("ref") / "store")
    train_model(store, "split", "mf", model_config={"emb": 8}, train_config=CFG)
    return _result(store)


def _assert_close(got, want, atol):
    sd, metrics, losses, _ = got
    rsd, rmetrics, rlosses, _ = want
    assert sd.keys() == rsd.keys()
    for k in sd:
        diff = (sd[k] - rsd[k]).abs().max().item()
        assert diff <= atol, f"parameter {k} differs by {diff}"
    assert metrics.keys() == rmetrics.keys() and len(metrics) >= EPOCHS * 7
    for k in metrics:
        assert metrics[k] == pytest.approx(rmetrics[k], abs=atol), k
    assert np.allclose(losses, rlosses, atol=atol, rtol=0)


def _wait_for_checkpoint(store_path, proc):
    """The first checkpoint (polled tightly: the kill should follow it at once)."""
    wait_until(
        lambda: glob.glob(f"{store_path}/_checkpoints/*/last.pt"), "a training checkpoint", proc=proc, poll_s=0.005
    )


def _local_rank(proc):
    try:
        return proc.environ().get("LOCAL_RANK")
    except psutil.Error:
        return None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_survive_a_killed_rank_via_torchrun_restart_and_match_one_process(tmp_path, reference):
    store = _store(tmp_path / "store")
    cmd = [
        *TORCHRUN,
        "--standalone",
        "--nproc_per_node",
        "2",
        "--max-restarts",
        "1",
        "-m",
        "mmiris.train.launch",
        "--store",
        str(tmp_path / "store"),
        *ARGS,
        "--checkpoint-steps",
        "15",
    ]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # rank 1's pid, known before training starts, so the kill follows the checkpoint at once
    victims = wait_until(
        lambda: [c for c in psutil.Process(proc.pid).children(recursive=True) if _local_rank(c) == "1"],
        "rank 1 started",
        proc=proc,
        poll_s=0.05,
    )
    _wait_for_checkpoint(tmp_path / "store", proc)  # first checkpoint: step 15 of epoch 1
    victims[0].send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=PATIENCE_S)
    assert proc.returncode == 0, out[-3000:]
    # torchrun names the killed rank; the survivor either reached the broken collective first
    # and names itself and the cause, or torchrun stopped it before that (a race)
    assert "exitcode: -9" in out and "local_rank: 1" in out, out[-3000:]
    assert ("rank 0/2:" in out and "another rank probably died" in out) or "closing signal SIGTERM" in out, out[-3000:]
    assert "torchrun restarted this worker group: resuming" in out, out[-3000:]
    got = _result(store)
    assert got[3].info["world_size"] == 2 and got[3].info["resumed_from"] is not None, out[-3000:]
    _assert_close(got, reference, ATOL)


def test_two_nodes_over_c10d_rendezvous_match_one_process(tmp_path, reference):
    store = _store(tmp_path / "store")
    port = _free_port()
    procs = [
        subprocess.Popen(
            [
                *TORCHRUN,
                "--nnodes",
                "2",
                "--node_rank",
                str(r),
                "--nproc_per_node",
                "1",
                "--rdzv_backend",
                "c10d",
                "--rdzv_endpoint",
                f"127.0.0.1:{port}",
                "--rdzv_id",
                "mmiris-test",
                "-m",
                "mmiris.train.launch",
                "--store",
                str(tmp_path / "store"),
                *ARGS,
            ],
            cwd=tmp_path,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in (0, 1)
    ]
    outs = [p.communicate(timeout=PATIENCE_S)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    printed = [line for o in outs for line in o.splitlines() if line.startswith("model-mf@")]
    assert len(printed) == 1  # only rank 0 publishes and prints the ref
    got = _result(store)
    assert got[3].info["world_size"] == 2
    _assert_close(got, reference, ATOL)


def test_sigkill_mid_epoch_then_resume_reaches_the_identical_model(tmp_path, reference, monkeypatch):
    from mmiris import cli

    store = _store(tmp_path / "store")
    base = ["--store", str(tmp_path / "store"), "train", *ARGS, "--checkpoint-steps", "20"]
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from mmiris.cli import main; sys.exit(main())", *base],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _wait_for_checkpoint(tmp_path / "store", proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not store.versions("model-mf")  # nothing published by the killed run
    monkeypatch.setenv("MMIRIS_STORE", str(tmp_path / "store"))
    assert cli.main([*base, "--resume"]) == 0
    got = _result(store)
    resumed = got[3].info["resumed_from"]
    assert resumed is not None and resumed["batch"] > 0  # continued inside an epoch
    assert not glob.glob(f"{tmp_path}/store/_checkpoints/*/last.pt")  # cleaned after publishing
    _assert_close(got, reference, 0.0)  # bit-identical to the uninterrupted run


def test_the_launcher_leaves_through_exit_worker_with_its_output_and_exit_code(tmp_path):
    """``python -m mmiris.train.launch`` ends with ``os._exit`` (no interpreter finalization,
    see ``exit_worker``): what it printed and logged still arrives, and the exit code is
    main's, 0 for a published model and 2 for a problem to fix. Block-buffered stdout (no
    PYTHONUNBUFFERED), as a job script sees it."""
    store = _store(tmp_path / "store")
    env = {k: v for k, v in _env().items() if k != "PYTHONUNBUFFERED"}
    cmd = [sys.executable, "-m", "mmiris.train.launch", "--store", str(tmp_path / "store"), *ARGS]
    ok = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=PATIENCE_S)
    assert ok.returncode == 0, ok.stderr[-3000:]
    ref = store.latest("model-mf")
    assert ok.stdout.strip().splitlines()[-1] == str(ref) and f"published {ref}" in ok.stderr
    bad = [*cmd[: -len(ARGS)], *ARGS, "--split", "split@0000000000000000"]
    fail = subprocess.run(bad, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=PATIENCE_S)
    assert fail.returncode == 2 and "mmiris.train.launch: error:" in fail.stderr and "split@0000" in fail.stderr
