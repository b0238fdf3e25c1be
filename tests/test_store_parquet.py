"""Parquet written for query engines: sorted by id, bounded row groups and parts, timestamps,
column pushdown, versions written as parts by several processes, old stores still readable."""

from __future__ import annotations

import json
import pickle

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmiris.artifacts import ArtifactStore, Output
from mmiris.artifacts import store as store_mod
from mmiris.errors import MmirisError


def features(ids, dim=4) -> pa.Table:
    ids = list(ids)
    vecs = np.arange(len(ids) * dim, dtype=np.float32).reshape(len(ids), dim) + np.array(ids)[:, None]
    return pa.table(
        {
            "item_id": pa.array(ids, pa.int64()),
            "feature": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), dim),
            "present": [True] * len(ids),
            "reason": pa.array([None] * len(ids), pa.string()),
        }
    )


def interactions(n=5) -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array([0] * n, pa.int64()),
            "item_id": pa.array(range(n), pa.int64()),
            "rating": pa.array([1.0] * n, pa.float32()),
            "timestamp": pa.array([978300760 + i for i in range(n)], pa.int64()),
        }
    )


def users() -> pa.Table:
    return pa.table({"user_id": pa.array([0], pa.int64()), "source_id": ["u0"]})


def test_tables_are_sorted_by_id_with_bounded_row_groups_and_parts(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)
    monkeypatch.setattr(store_mod, "ROW_GROUP_BYTES", 2_000)  # ~60 rows of 32 bytes
    monkeypatch.setattr(store_mod, "PART_BYTES", 8_000)
    ids = list(range(1000))[::-1]
    ref = store.publish("f", "text_features", Output({"features": features(ids)}))
    meta = store.manifest(ref).tables["features"]
    assert len(meta["parts"]) >= 4 and meta["sort_by"] == ["item_id"] and meta["rows"] == 1000
    for part in meta["parts"]:
        pf = pq.ParquetFile(tmp_path / "f" / ref.version / "features" / part["file"])
        assert pf.metadata.num_row_groups >= 2
        assert pf.metadata.row_group(0).sorting_columns[0].column_index == 0
    t = store.read_table(ref)
    assert t.column("item_id").to_pylist() == sorted(ids)
    got = store.read_table(ref, columns=["item_id", "present"], ids=[3, 500, 999, 5000])
    assert got.column_names == ["item_id", "present"] and got.column("item_id").to_pylist() == [3, 500, 999]


def test_several_processes_write_parts_and_duckdb_reads_them_with_column_pushdown(tmp_path):
    store = ArtifactStore(tmp_path)
    staged = store.stage("feat", "image_features", params={"n": 30})
    assert not store.exists(staged.ref)
    worker_store, worker_staged = pickle.loads(pickle.dumps((store, staged)))  # what a Dask worker gets
    parts = [
        worker_store.write_part(worker_staged, "features", k, features(range(k * 10, k * 10 + 10))) for k in (2, 0, 1)
    ]
    assert store.versions("feat") == []  # nothing visible before commit
    ref = store.commit(staged, {"features": parts}, Output(tables={}, stats={"items": 30}))
    assert ref == store.ref_for("feat", "image_features", [], {"n": 30})
    meta = store.manifest(ref).tables["features"]
    assert [p["file"] for p in meta["parts"]] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert store.read_table(ref).column("item_id").to_pylist() == list(range(30))
    glob = f"{tmp_path}/feat/{ref.version}/features/*.parquet"
    con = duckdb.connect()
    plan = con.sql(f"EXPLAIN SELECT item_id FROM read_parquet('{glob}') WHERE item_id > 5").fetchall()[0][1]
    assert "Projections: item_id" in plan and "feature" not in plan
    assert con.execute(f"SELECT count(*), min(item_id), max(item_id) FROM read_parquet('{glob}')").fetchone() == (
        30,
        0,
        29,
    )
    assert not list((tmp_path / "_staging").iterdir())


def test_aborted_stage_leaves_nothing_and_mixed_schemas_are_refused(tmp_path):
    store = ArtifactStore(tmp_path)
    staged = store.stage("feat", "image_features")
    parts = [store.write_part(staged, "features", 0, features([1], dim=4))]
    parts.append(store.write_part(staged, "features", 1, features([2], dim=8)))
    with pytest.raises(MmirisError, match="different Arrow schemas"):
        store.commit(staged, {"features": parts})
    assert store.versions("feat") == [] and not list((tmp_path / "_staging").iterdir())


def test_epoch_seconds_are_stored_as_timestamps_and_read_back_as_int64(tmp_path):
    store = ArtifactStore(tmp_path)
    ref = store.publish("inter", "interactions", Output({"interactions": interactions(), "users": users()}))
    path = store.table_path(ref, "interactions")
    assert pa.types.is_timestamp(pq.read_schema(path).field("timestamp").type)
    assert (
        duckdb.connect().execute(f"SELECT min(timestamp) FROM '{path}'").fetchone()[0].isoformat()
        == "2000-12-31T22:12:40+00:00"
    )
    t = store.read_table(ref, "interactions")
    assert t.schema.field("timestamp").type == pa.int64()
    assert t.column("timestamp").to_pylist() == [978300760 + i for i in range(5)]


def test_version_ids_do_not_depend_on_the_parquet_layout(tmp_path):
    # The contract version (1) is part of the id; sort_by/storage hints are not.
    ref = ArtifactStore(tmp_path).ref_for("inter", "interactions", [], {"a": 1}, "src-x")
    assert ref.version == store_mod.version_id(
        "inter", "interactions", 1, [], {"a": 1}, store_mod.full_code_version("src-x")
    )


def test_a_store_written_before_these_changes_stays_readable(tmp_path):
    """One file, one row group, int64 seconds, a manifest without row_groups/parts."""
    store = ArtifactStore(tmp_path)
    ref = store.publish("inter", "interactions", Output({"interactions": interactions(), "users": users()}))
    path = store.table_path(ref, "interactions")
    old = interactions().take([4, 3, 2, 1, 0])
    pq.write_table(old, path, compression="zstd")  # the old writer
    mpath = tmp_path / "inter" / ref.version / "manifest.json"
    raw = json.loads(mpath.read_text())
    data = open(path, "rb").read()
    import hashlib

    raw["tables"]["interactions"] = {
        "file": "interactions.parquet",
        "rows": 5,
        "columns": old.column_names,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    mpath.write_text(json.dumps(raw))
    t = store.read_table(ref, "interactions", columns=["item_id", "timestamp"])
    assert t.column("item_id").to_pylist() == [4, 3, 2, 1, 0]
    assert t.schema.field("timestamp").type == pa.int64()
