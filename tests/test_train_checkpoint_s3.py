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
from tests.test_store_s3 import s3  # noqa: F401 - the moto server fixture

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


def test_checkpoint_roundtrip_at_a_uri(s3):  # noqa: F811
    where = uri(s3, "ckpt-unit/run-1")
    assert load_checkpoint(where) is None and not checkpoint_exists(where)
    state = {"model": "mf", "model_state": {}, "optimizer": {}, "rng": {}, "state": {"epoch": 1}}
    save_checkpoint(where, state)
    assert checkpoint_exists(where) and load_checkpoint(where)["state"] == {"epoch": 1}  # type: ignore[index]
    remove_checkpoint(where)
    assert not checkpoint_exists(where)


@pytest.mark.timeout(1800)  # three torchrun groups: ~30 s on an idle 2-core machine, 10+ min when it is loaded
def test_torchrun_group_killed_resumes_from_s3_checkpoints_bit_identically(tmp_path, s3):  # noqa: F811
    ref_store = ArtifactStore(tmp_path / "ref-store")
    publish_tiny_split(ref_store, n_users=150)
    ref = subprocess.run(
        torchrun(str(tmp_path / "ref-store")), cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600
    )
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]
    reference = _result(ref_store)

    store_uri = uri(s3, "train-resume")
    store = ArtifactStore(store_uri)
    publish_tiny_split(store, n_users=150)
    fs = pafs.S3FileSystem(endpoint_override=s3, scheme="http", region="us-east-1")
    first, second = tmp_path / "node-a", tmp_path / "node-b"
    first.mkdir()
    second.mkdir()
    proc = subprocess.Popen(
        torchrun(store_uri),
        cwd=first,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    t0 = time.time()
    sel = pafs.FileSelector("mmiris/train-resume/_checkpoints", recursive=True, allow_not_found=True)
    while not [i for i in fs.get_file_info(sel) if i.path.endswith("/last.pt")]:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.time() - t0 < 300, "no checkpoint appeared on S3"
        time.sleep(0.02)
    seen_at = time.time() - t0
    # torchrun starts each rank in a session of its own: kill every process of the group
    ranks = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    for p in ranks:
        p.send_signal(signal.SIGKILL)
    psutil.wait_procs(ranks, timeout=30)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == -signal.SIGKILL, out[-3000:]
    assert not store.versions("model-mf"), f"published before the kill ({seen_at:.1f}s):\n{out[-3000:]}"
    assert not list(first.rglob("last.pt"))  # the checkpoint is on S3 only

    done = subprocess.run(
        torchrun(store_uri, "--resume"), cwd=second, env=_env(), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    got = _result(store)
    assert got[3].info["world_size"] == 2 and got[3].info["resumed_from"] is not None
    assert not [i for i in fs.get_file_info(sel) if i.path.endswith("/last.pt")]  # removed after publishing
    _assert_close(got, reference, 0.0)  # bit-identical to the uninterrupted 2-process run
