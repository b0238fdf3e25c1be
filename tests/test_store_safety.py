"""The store's guards: the name grammar, paths that stay inside the store, checksums before
use, models without pickled code, and group publishes that readers see whole or not at all."""

import io
import json
import os
import pickle
from pathlib import Path

import pyarrow as pa
import pytest
import torch

from mmiris.artifacts import ArtifactNameError, ArtifactRef, ArtifactStore, ChecksumError, Output, Pending, check_name
from mmiris.errors import MmirisError


def _interactions(n=4):
    return Output(
        tables={
            "interactions": pa.table(
                {
                    "user_id": list(range(n)),
                    "item_id": [i % 2 for i in range(n)],
                    "rating": [4.0] * n,
                    "timestamp": [None] * n,
                }
            ),
            "users": pa.table({"user_id": list(range(n)), "source_id": [str(i) for i in range(n)]}),
        }
    )


def _items(n=2):
    return Output(
        tables={
            "items": pa.table(
                {
                    "item_id": list(range(n)),
                    "source_id": [str(i) for i in range(n)],
                    "title": ["t"] * n,
                    "year": pa.array([None] * n, pa.int32()),
                    "genres": pa.array([None] * n, pa.list_(pa.string())),
                    "imdb_id": pa.array([None] * n, pa.string()),
                    "image_url": pa.array([None] * n, pa.string()),
                    "description": pa.array([None] * n, pa.string()),
                    "metadata_exact": [True] * n,
                }
            )
        }
    )


def _training_log():
    return pa.table({"epoch": [1], "step": [1], "loss": [0.5], "metric": [None], "value": [None], "seconds": [0.1]})


EXISTING = [
    "model-nais_prod",
    "ml1m_image_features",
    "recommendations-nais_prod",
    "tune-multimodal_iris",
    "split",
    "interactions",
    "ml1m-interactions",
    "metrics-fism",
    "demo-split",
    "a",
    "v1.2",
    "x" * 128,
]
BAD = [
    "",
    "_staging",
    ".hidden",
    "..",
    "../../victim/x",
    "/abs/path",
    "a/b",
    "a@b",
    "a b",
    "a\nb",
    "tab\there",
    "nul\x00",
    "é",
    "x" * 129,
    "-",
    "a\\b",
]


@pytest.mark.parametrize("name", EXISTING)
def test_names_in_use_stay_valid(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", BAD)
def test_bad_names_are_refused_before_anything_is_written(store, name, tmp_path):
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(ArtifactNameError, match="expected 1-128 letters, digits"):
        store.publish(name, "interactions", _interactions())
    with pytest.raises(ArtifactNameError):
        store.get_or_create(name, "interactions", [], {}, lambda: pytest.fail("built"))
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_bad_versions_and_refs(store):
    for text in ["split@../x", "split@a/b", "a@b@c", "split@", "@v"]:
        with pytest.raises(ArtifactNameError):
            ArtifactRef.parse(text)
    with pytest.raises(ArtifactNameError):
        ArtifactRef("split", "LATEST")
    with pytest.raises(ArtifactNameError):
        store.resolve("../etc@latest")
    with pytest.raises(ArtifactNameError):
        store._path("..", "x")


def test_symlinked_name_folder_pointing_outside_is_refused(store, tmp_path):
    outside = tmp_path / "victim"
    outside.mkdir()
    os.symlink(outside, Path(store.root) / "interactions")
    with pytest.raises(ArtifactNameError, match="outside the store"):
        store.publish("interactions", "interactions", _interactions())
    assert list(outside.iterdir()) == []


def test_table_and_file_checksums(store):
    ref = store.publish("interactions", "interactions", _interactions())
    m = store.manifest(ref)
    assert set(m.tables["users"]) >= {"sha256", "bytes"}
    path = Path(store.table_path(ref, "interactions"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x04  # one flipped bit
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=r"interactions.parquet fails its checksum"):
        store.read_table(ref, "interactions")
    path.write_bytes(bytes(data[:100]))  # truncated: the size check names it
    with pytest.raises(ChecksumError, match=r"has 100 bytes, the manifest records"):
        store.read_table(ref, "interactions")
    # --no-verify skips the check; the Parquet reader then fails with a one-line error naming the file
    with pytest.raises(MmirisError, match=r"interactions.parquet is not a readable Parquet file"):
        ArtifactStore(store.root, verify=False).read_table(ref, "interactions")
    assert store.read_table(ref, "users").num_rows == 4


def test_verify_env_switch(monkeypatch, tmp_path):
    monkeypatch.setenv("MMIRIS_VERIFY", "0")
    assert ArtifactStore(tmp_path / "s").verify is False
    monkeypatch.setenv("MMIRIS_VERIFY", "1")
    assert ArtifactStore(tmp_path / "s").verify is True


def test_manifests_without_table_checksums_still_read(store):
    """Versions published before table checksums were recorded (the field is absent)."""
    ref = store.publish("interactions", "interactions", _interactions())
    path = Path(store.version_dir(ref)) / "manifest.json"
    raw = json.loads(path.read_text())
    for t in raw["tables"].values():
        del t["sha256"], t["bytes"]
    path.write_text(json.dumps(raw))
    assert store.read_table(ref, "interactions").num_rows == 4


def test_corrupt_manifest_is_one_clear_error(store):
    ref = store.publish("interactions", "interactions", _interactions())
    path = Path(store.version_dir(ref)) / "manifest.json"
    path.write_text("{not json")
    with pytest.raises(MmirisError, match=r"manifest .*manifest.json is corrupt"):
        store.manifest(ref)


def test_store_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(MmirisError, match="is a file, expected a folder"):
        ArtifactStore(f)


def test_group_is_invisible_until_complete_and_gc_removes_stale_orphans(store, monkeypatch):
    inter = store.ref_for("interactions", "interactions", [], {"p": 1})
    refs = store.publish_group(
        [
            Pending("interactions", "interactions", _interactions(), [], {"p": 1}),
            Pending("items", "items", _items(), [inter], {"p": 1}),
        ]
    )
    assert refs[0] == inter and store.latest("items") == refs[1]
    assert store.manifest(refs[1]).info["group"] == [str(r) for r in refs]

    # A failure while moving the second member into place takes the first one out again.
    import mmiris.artifacts.store as mod

    real_rename, calls = os.rename, []

    def rename(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(mod.os, "rename", rename)
    with pytest.raises(OSError):
        store.publish_group(
            [
                Pending("interactions", "interactions", _interactions(), [], {"p": 2}),
                Pending("items", "items", _items(), [inter], {"p": 2}),
            ]
        )
    monkeypatch.undo()
    assert [m.params for m in store.versions("interactions", incomplete=True)] == [{"p": 1}]
    assert not list((Path(store.root) / "_staging").glob("*"))

    # A kill between the renames: simulate by deleting the second member of a complete group.
    inter3 = store.ref_for("interactions", "interactions", [], {"p": 3})
    refs3 = store.publish_group(
        [
            Pending("interactions", "interactions", _interactions(), [], {"p": 3}),
            Pending("items", "items", _items(), [inter3], {"p": 3}),
        ]
    )
    import shutil

    shutil.rmtree(store.version_dir(refs3[1]))
    (Path(store.root) / "interactions" / "LATEST").unlink()
    assert [m.params for m in store.versions("interactions")] == [{"p": 1}]
    assert store.latest("interactions") == inter  # never the orphan
    (Path(store.root) / "interactions" / "LATEST.999999999.deadbeef.tmp").write_text("")
    monkeypatch.setattr(mod, "_STALE_GROUP_S", -1)
    assert store.gc_staging() == 2
    assert not store.exists(refs3[0])


def test_model_file_with_pickled_code_is_refused(store, tmp_path):
    from mmiris.models.build import read_model_file
    from mmiris.train.checkpoint import load_checkpoint

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = pickle.dumps({"model": "mf", "config": {}, "state_dict": {}, "x": Evil()})
    buf = io.BytesIO()
    torch.save({"model": "mf", "config": {}, "state_dict": {}, "x": Evil()}, buf)
    for payload in (evil, buf.getvalue()):
        ref = store.publish(
            "model-mf",
            "model",
            Output({"training_log": _training_log()}, files={"model.pt": payload}),
            params={"n": len(payload)},
        )
        with pytest.raises(MmirisError, match=r"model model-mf@.*files/model.pt is not a loadable model file"):
            read_model_file(store, ref)
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "last.pt").write_bytes(buf.getvalue())
    with pytest.raises(MmirisError, match=r"checkpoint .*last.pt is unreadable"):
        load_checkpoint(tmp_path / "ck")
    assert not marker.exists()


def test_model_file_in_the_current_format_loads_and_checksum_is_checked(store):
    from mmiris.models.build import read_model_file

    buf = io.BytesIO()
    torch.save(
        {
            "format": 1,
            "model": "mf",
            "config": {"emb": 16, "hidden": (8, 4)},
            "n_users": 3,
            "n_items": 2,
            "state_dict": {"w": torch.ones(2, 3)},
        },
        buf,
    )
    ref = store.publish(
        "model-mf", "model", Output({"training_log": _training_log()}, files={"model.pt": buf.getvalue()})
    )
    blob = read_model_file(store, ref)
    assert blob["config"]["hidden"] == (8, 4) and torch.equal(blob["state_dict"]["w"], torch.ones(2, 3))
    path = Path(store.version_dir(ref)) / "files" / "model.pt"
    path.write_bytes(path.read_bytes()[:-10])  # truncated: a checksum error, not a torch error
    with pytest.raises(ChecksumError, match=r"files/model.pt has \d+ bytes, the manifest records"):
        read_model_file(store, ref)
