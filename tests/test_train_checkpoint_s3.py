"""Checkpoints at a filesystem URI: a 2-process torchrun group whose store (and so its
checkpoints, ``<store>/_checkpoints/…``) is on S3 (moto), SIGKILLed as a whole after its first
checkpoint and started again with ``--resume`` from another working directory, reaches the
model an uninterrupted 2-process run reaches, bit for bit. No disk is shared between the runs
but the bucket."""

from __future__ import annotations

import signal
import subprocess
import time

import psutil
import pyarrow.fs as pafs
import pytest
from test_train_distributed import ARGS, TORCHRUN, _assert_close, _env, _result
from test_train_trainer import publish_tiny_split

from mmiris.artifacts import ArtifactStore
from mmiris.train.checkpoint import checkpoint_exists, load_checkpoint, remove_checkpoint, save_checkpoint
from tests.test_store_s3 import patient_s3, s3  # noqa: F401 - the moto server fixture
from tests.waiting import PATIENCE_S, output_tail, wait_until

pytestmark = pytest.mark.slow


def uri(endpoint: str, path: str) -> str:
    return f"s3://mmiris/{path}?endpoint_override={endpoint}&scheme=http&region=us-east-1"


def torchrun(store: str, *extra: str) -> list[str]:
    return [
        *TORCHRUN,
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "mmiris.train.launch",
        "--store",
        store,
        *ARGS,
        "--checkpoint-steps",
        "15",
        "--epochs",
        "8",  # long enough to be killed mid-run (the last --epochs and --patience win)
        "--patience",
        "100",
        *extra,
    ]


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL torchrun and its ranks (each rank runs in a session of its own)."""
    try:
        ranks = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        ranks = []
    proc.send_signal(signal.SIGKILL)
    for p in ranks:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(ranks, timeout=PATIENCE_S)
    proc.wait()


def test_checkpoint_roundtrip_at_a_uri(s3):  # noqa: F811
    where = uri(s3, "ckpt-unit/run-1")
    assert load_checkpoint(where) is None and not checkpoint_exists(where)
    state = {"model": "mf", "model_state": {}, "optimizer": {}, "rng": {}, "state": {"epoch": 1}}
    save_checkpoint(where, state)
    assert checkpoint_exists(where) and load_checkpoint(where)["state"] == {"epoch": 1}  # type: ignore[index]
    remove_checkpoint(where)
    assert not checkpoint_exists(where)


# Three torchrun groups: ~30 s on an idle 2-core machine, 10+ min when it is loaded. Waits are
# on what the bucket and the store show; the overall limits are generous.
@pytest.mark.timeout(4 * PATIENCE_S)
def test_torchrun_group_killed_resumes_from_s3_checkpoints_bit_identically(tmp_path, s3):  # noqa: F811
    ref_store = ArtifactStore(tmp_path / "ref-store")
    publish_tiny_split(ref_store, n_users=150)
    ref = subprocess.run(
        torchrun(str(tmp_path / "ref-store")),
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=PATIENCE_S,
    )
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]
    reference = _result(ref_store)

    store_uri = uri(s3, "train-resume")
    store = ArtifactStore(store_uri)
    publish_tiny_split(store, n_users=150)
    fs = patient_s3(s3)
    first, second = tmp_path / "node-a", tmp_path / "node-b"
    first.mkdir()
    second.mkdir()
    log = tmp_path / "first.log"  # a file, not a pipe nobody reads while the group trains
    with log.open("w") as out:
        proc = subprocess.Popen(torchrun(store_uri), cwd=first, env=_env(), stdout=out, stderr=subprocess.STDOUT)
    t0 = time.time()
    sel = pafs.FileSelector("mmiris/train-resume/_checkpoints", recursive=True, allow_not_found=True)
    try:
        wait_until(
            lambda: [i for i in fs.get_file_info(sel) if i.path.endswith("/last.pt")],
            "a checkpoint on S3",
            proc=proc,
            log=log,
        )
        seen_at = time.time() - t0
    finally:
        kill_group(proc)
    out_text = output_tail(proc, log)
    assert proc.returncode == -signal.SIGKILL, out_text
    assert not store.versions("model-mf"), f"published before the kill ({seen_at:.1f}s):\n{out_text}"
    assert not list(first.rglob("last.pt"))  # the checkpoint is on S3 only

    done = subprocess.run(
        torchrun(store_uri, "--resume"), cwd=second, env=_env(), capture_output=True, text=True, timeout=PATIENCE_S
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    got = _result(store)
    assert got[3].info["world_size"] == 2 and got[3].info["resumed_from"] is not None
    assert not [i for i in fs.get_file_info(sel) if i.path.endswith("/last.pt")]  # removed after publishing
    _assert_close(got, reference, 0.0)  # bit-identical to the uninterrupted 2-process run
