import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmiris.artifacts import ArtifactRef, ArtifactStore, Output
from mmiris.artifacts.store import ChecksumError
from mmiris.errors import ArtifactNotFound, SchemaError


def _interactions(n=5):
    return Output(
        tables={
            "interactions": pa.table(
                {
                    "user_id": list(range(n)),
                    "item_id": [i % 3 for i in range(n)],
                    "rating": [4.0] * n,
                    "timestamp": [None] * n,
                }
            ),
            "users": pa.table({"user_id": list(range(n)), "source_id": [str(i) for i in range(n)]}),
        },
        stats={"dropped_duplicates": 0},
    )


def test_publish_read_roundtrip_and_manifest(store):
    ref = store.publish("interactions", "interactions", _interactions(), params={"src": "abc"})
    t = store.read_table(ref, "interactions")
    assert t.column("user_id").to_pylist() == [0, 1, 2, 3, 4]
    assert t.schema.field("rating").type == pa.float32()
    m = store.manifest(ref)
    assert m.kind == "interactions" and m.schema_version == 1
    assert m.tables["interactions"]["rows"] == 5 and m.params == {"src": "abc"}
    assert m.stats == {"dropped_duplicates": 0} and m.created_at
    assert store.resolve("interactions") == ref == store.resolve(f"interactions@{ref.version[:6]}")


def test_same_inputs_same_version_and_no_overwrite(store):
    a = store.publish("interactions", "interactions", _interactions(), params={"p": 1})
    mtime = os.path.getmtime(os.path.join(store.root, a.name, a.version, "manifest.json"))
    b = store.publish("interactions", "interactions", _interactions(), params={"p": 1})
    assert a == b
    assert os.path.getmtime(os.path.join(store.root, a.name, a.version, "manifest.json")) == mtime
    c = store.publish("interactions", "interactions", _interactions(), params={"p": 2})
    assert c != a and store.latest("interactions") == c
    assert [m.version for m in store.versions("interactions")] == [a.version, c.version]


def test_get_or_create_skips_build_for_known_inputs(store):
    calls = []

    def build():
        calls.append(1)
        return _interactions()

    a = store.get_or_create("interactions", "interactions", [], {"k": 1}, build)
    b = store.get_or_create("interactions", "interactions", [], {"k": 1}, build)
    assert a == b and len(calls) == 1


def test_crash_mid_publish_leaves_nothing_that_looks_complete(store, monkeypatch):
    import mmiris.artifacts.store as mod

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(mod.pq, "write_table", boom)
    with pytest.raises(RuntimeError):
        store.publish("interactions", "interactions", _interactions(), params={})
    monkeypatch.undo()
    assert store.versions("interactions") == []
    with pytest.raises(ArtifactNotFound):
        store.latest("interactions")
    assert not list((store.root and __import__("pathlib").Path(store.root) / "_staging").glob("*"))


def test_bad_table_rejected_naming_column(store):
    out = _interactions()
    out.tables["interactions"] = out.tables["interactions"].rename_columns(["user", "item_id", "rating", "timestamp"])
    with pytest.raises(SchemaError, match=r"missing column\(s\) \['user_id'\].*unexpected column\(s\) \['user'\]"):
        store.publish("interactions", "interactions", out)
    out = _interactions()
    out.tables["interactions"] = out.tables["interactions"].set_column(
        0, "user_id", pa.array([None, 1, 2, 3, 4], pa.int64())
    )
    with pytest.raises(SchemaError, match="'user_id' has 1 null value"):
        store.publish("interactions", "interactions", out)
    assert store.versions("interactions") == []


def test_reader_validates_tampered_file(store):
    ref = store.publish("interactions", "interactions", _interactions())
    path = store.table_path(ref, "users")
    pq.write_table(pa.table({"user_id": ["x"], "source_id": ["1"]}), path)
    with pytest.raises(ChecksumError, match=rf"artifact {ref}: .*users.parquet"):
        store.read_table(ref, "users")
    unverified = ArtifactStore(store.root, verify=False)  # --no-verify: the contract still holds
    with pytest.raises(SchemaError, match=rf"artifact {ref}.*'user_id' has type string, expected int64"):
        unverified.read_table(ref, "users")


def test_files_and_lineage(store):
    parent = store.publish("interactions", "interactions", _interactions())
    metrics = Output(
        tables={
            "metrics": pa.table(
                {
                    "model": ["m@1"],
                    "split": ["s@1"],
                    "protocol": ["sampled"],
                    "metric": ["hr"],
                    "k": pa.array([10], pa.int32()),
                    "value": [0.5],
                    "users": [3],
                }
            )
        },
        files={"note.txt": b"hi"},
    )
    child = store.publish("metrics", "metrics", metrics, parents=[parent])
    assert store.read_file(child, "note.txt") == b"hi"
    tree = store.lineage(child)
    assert tree["ref"] == str(child) and tree["parents"][0]["ref"] == str(parent)
    assert ArtifactRef.parse(str(child)) == child


def test_cli_ls_show_lineage(store, capsys, monkeypatch):
    from mmiris.cli import main

    ref = store.publish("interactions", "interactions", _interactions())
    assert main(["--store", store.root, "artifacts", "ls"]) == 0
    assert str(ref) in capsys.readouterr().out
    assert main(["--store", store.root, "artifacts", "show", "interactions@latest"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == ref.version
    assert main(["--store", store.root, "artifacts", "lineage", str(ref)]) == 0
    assert str(ref) in capsys.readouterr().out
    assert main(["--store", store.root, "artifacts", "show", "nope"]) == 2
    assert "no published version of artifact 'nope'" in capsys.readouterr().err
