"""benchmarks.modality_knn: content kNN with one modality or both, on a tiny MovieLens-like
catalogue with random feature vectors (no ../shared/data)."""

import json

import numpy as np
import pyarrow as pa
import pytest

from benchmarks import modality_knn
from mmiris.artifacts import ArtifactStore, Output
from mmiris.pipelines.ingest import ingest_movielens
from mmiris.pipelines.split import split_leave_one_out

N_USERS, N_MOVIES = 20, 30


def _features(store, name, kind, dim, n_items, seed):
    vecs = np.random.default_rng(seed).normal(size=(n_items, dim)).astype(np.float32)
    table = pa.table(
        {
            "item_id": pa.array(np.arange(n_items), pa.int64()),
            "feature": pa.FixedSizeListArray.from_arrays(pa.array(vecs.ravel(), pa.float32()), dim),
            "present": pa.array([True] * n_items),
            "reason": pa.array([None] * n_items, pa.string()),
        }
    )
    return str(store.publish(name, kind, Output({"features": table}), params={"seed": seed}))


def tiny_movielens(tmp, n_users=N_USERS, n_movies=N_MOVIES, per_user=8):
    """A store with a MovieLens-like catalogue ingested and its leave-one-out split (5
    negatives): (store, ingest result, split ref, n_items). Shared with other benchmark tests."""
    rng = np.random.default_rng(0)
    ml = tmp / "ml"
    ml.mkdir()
    lines = []
    for u in range(1, n_users + 1):
        movies = sorted(set(rng.choice(n_movies, per_user, replace=False) + 1) | {u % n_movies + 1})
        lines += [f"{u}::{m}::4::{978300000 + 10 * k}" for k, m in enumerate(movies)]
    (ml / "ratings.dat").write_text("\n".join(lines) + "\n", encoding="iso-8859-1")
    (ml / "movies.dat").write_text(
        "".join(f"{m}::Movie {m} (1995)::Drama\n" for m in range(1, n_movies + 1)), encoding="iso-8859-1"
    )
    store = ArtifactStore(tmp / "store")
    res = ingest_movielens(store, ml)
    split_ref = str(split_leave_one_out(store, res.interactions, n_negatives=5))
    return store, res, split_ref, store.manifest(split_ref).stats["n_items"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    store, _, split_ref, n_items = tiny_movielens(tmp_path_factory.mktemp("modality_knn"))
    refs = {
        "image": _features(store, "img", "image_features", 6, n_items, 1),
        "text": _features(store, "txt", "text_features", 4, n_items, 2),
        "text_other": _features(store, "txt2", "text_features", 4, n_items, 3),
    }
    return store, split_ref, refs


def test_the_weight_isolates_a_modality(world):
    store, split_ref, refs = world
    other = {**refs, "text": refs["text_other"]}  # another plot vector for every item
    poster = modality_knn.run_row(store, split_ref, refs, 1.0)
    poster_other = modality_knn.run_row(store, split_ref, other, 1.0)
    plot = modality_knn.run_row(store, split_ref, refs, 0.0)
    plot_other = modality_knn.run_row(store, split_ref, other, 0.0)
    metrics = ("hr10", "ndcg10", "full_hr10", "full_ndcg10", "valid_hr10")
    for k in metrics:
        assert 0.0 <= poster[k] <= 1.0
        assert poster[k] == poster_other[k]  # poster only: the plots are not read
    assert any(plot[k] != plot_other[k] for k in metrics)  # plot only: they are
    assert poster["image_weight"] == 1.0 and poster["model_ref"] != plot["model_ref"]


def test_rows_file_and_arguments(tmp_path):
    assert modality_knn.row_key("cold", 0.5) == "cold/image_weight=0.5"
    assert modality_knn.row_key("full", 1.0) == "full/image_weight=1"
    assert modality_knn.parse_weights("0, 0.5,1") == [0.0, 0.5, 1.0]
    for bad in ("1.5", "x", ""):
        with pytest.raises(SystemExit, match="--weights"):
            modality_knn.parse_weights(bad)
    path = tmp_path / "r" / "modality_knn.json"
    modality_knn.save(path, {"b": {"key": "b", "hr10": 0.2}, "a": {"key": "a", "hr10": 0.1}})
    assert [r["key"] for r in json.loads(path.read_text())["rows"]] == ["a", "b"]
    assert not list(path.parent.glob("*.tmp"))
