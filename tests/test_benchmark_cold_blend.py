"""benchmarks.cold_blend: Hybrid IRIS blended with content kNN on a tiny cold-item split with
random feature vectors (no ../shared/data). The ends of the blend curve must be each model's
own evaluate-stage ranking; the standardisation is checked against a plain per-case loop."""

import json

import numpy as np
import pytest
from test_benchmark_modality_knn import _features, tiny_movielens

from benchmarks import cold_blend
from mmiris.data.split import load_split
from mmiris.errors import MmirisError
from mmiris.eval.metrics import metrics_from_ranks
from mmiris.eval.protocols import sampled_ranks
from mmiris.models.base import targets_as_new
from mmiris.models.build import load_model
from mmiris.pipelines.split import derive_split
from mmiris.pipelines.train import train_model
from mmiris.train.config import TrainConfig

N_USERS, N_MOVIES = 24, 60


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    store, _, full, n_items = tiny_movielens(tmp_path_factory.mktemp("cold_blend"), N_USERS, N_MOVIES, 10)
    cold = str(derive_split(store, full, cold_items=0.3, seed=0, name="split_cold", n_negatives=4))
    feats = {
        "image_features": _features(store, "img", "image_features", 6, n_items, 1),
        "text_features": _features(store, "txt", "text_features", 4, n_items, 2),
    }
    cfg = TrainConfig(epochs=2, batch_size=64, threads=1, negatives_from="trained", select_on="cold")
    hybrid = str(
        train_model(store, cold, "hybrid_iris", model_config={"emb": 4, "image_hidden": 6}, train_config=cfg, **feats)
    )
    knn = str(train_model(store, cold, "content_knn", **feats))
    knn_full = str(train_model(store, full, "content_knn", **feats))
    return store, full, cold, hybrid, knn, knn_full


def _own_metrics(store, split_ref, model_ref, valid=False):
    split = load_split(store, split_ref)
    model = load_model(store, model_ref)
    model.set_history(split.history())
    if valid:
        with targets_as_new(model):
            r = sampled_ranks(model, split.valid_users, split.valid_items, split.valid_negatives)
    else:
        r = sampled_ranks(model, split.test_users, split.test_items, split.test_negatives)
    return {k: round(float(v), 4) for k, v in metrics_from_ranks(r.ranks).items() if k in ("hr10", "ndcg10")}


def test_the_ends_of_the_curve_are_each_models_own_ranking(world):
    store, _, cold, hybrid, knn, _ = world
    row = cold_blend.run(store, cold, hybrid, knn, [0.0, 0.5, 1.0])
    assert [p["w"] for p in row["curve"]] == [0.0, 0.5, 1.0]
    ends = {p["w"]: p for p in row["curve"]}
    knn_test, hybrid_test = _own_metrics(store, cold, knn), _own_metrics(store, cold, hybrid)
    assert {k: ends[0.0][k] for k in ("hr10", "ndcg10")} == knn_test
    assert {k: ends[1.0][k] for k in ("hr10", "ndcg10")} == hybrid_test
    # validation scores the hybrid's candidates as new items, as select_on "cold" does
    hybrid_valid = _own_metrics(store, cold, hybrid, valid=True)
    assert {"hr10": ends[1.0]["valid_hr10"], "ndcg10": ends[1.0]["valid_ndcg10"]} == hybrid_valid
    # the chosen weight is the best on validation, and the test figure is the test at that weight
    best = max(row["curve"], key=lambda p: (p["valid_hr10"], p["valid_ndcg10"]))
    assert row["chosen_w"] == best["w"]
    assert row["test"] == {"hr10": best["hr10"], "ndcg10": best["ndcg10"]}
    # without --knn: content kNN over the features the hybrid read, the same model as fitted above
    default = cold_blend.run(store, cold, hybrid, None, [0.0])
    assert default["knn"] == knn and default["curve"][0] == row["curve"][0]
    split = load_split(store, cold)
    assert row["test_cases"] == len(split.test_users) > 0 and row["valid_cases"] == len(split.valid_users)
    # the cross-fitted figure covers every test case, each fold at a weight from the grid
    assert row["cross_fit"]["folds"] == 2 and sum(f["cases"] for f in row["cross_fit"]["per_fold"]) == row["test_cases"]
    assert {f["w"] for f in row["cross_fit"]["per_fold"]} <= {0.0, 0.5, 1.0}


def test_standardise_against_a_loop_and_keeps_a_models_ranking():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(5, 4)).astype(np.float32) * 7 + 2
    scores[2] = 1.5  # all equal: zeros, not NaN
    counted = np.ones((5, 3), bool)
    counted[0, 1] = False  # a duplicate negative: left out of the mean and std
    z = cold_blend.standardise(scores, counted)
    for r in range(5):
        keep = [0] + [1 + c for c in range(3) if counted[r, c]]
        vals = [float(scores[r, c]) for c in keep]
        mean = sum(vals) / len(vals)
        std = (sum((v - mean) ** 2 for v in vals) / len(vals)) ** 0.5
        for c in range(4):
            want = 0.0 if std == 0 else (float(scores[r, c]) - mean) / std
            assert z[r, c] == pytest.approx(want, abs=1e-9)
    order = np.argsort(scores, axis=1, kind="stable")
    assert np.array_equal(np.argsort(z, axis=1, kind="stable")[[0, 1, 3, 4]], order[[0, 1, 3, 4]])


def test_models_from_another_split_and_bad_grids_are_refused_clearly(world, tmp_path, capsys):
    store, full, cold, hybrid, knn, knn_full = world
    with pytest.raises(MmirisError, match="--knn .* was not trained on --split"):
        cold_blend.run(store, cold, hybrid, knn_full, [0.0, 1.0])
    out = tmp_path / "blend.json"
    argv = ["--store", str(store.root), "--split", cold, "--model", hybrid, "--knn", knn_full, "--out", str(out)]
    assert cold_blend.main(argv) == 2
    assert "was not trained on --split" in capsys.readouterr().err and not out.exists()  # nothing written
    assert cold_blend.parse_grid("0:1:0.25") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert cold_blend.parse_grid("0.2, 0.8") == [0.2, 0.8]
    for bad in ("0:1:0", "x", "1.5", ""):
        with pytest.raises(SystemExit, match="--weights"):
            cold_blend.parse_grid(bad)


def test_main_writes_one_entry_per_model_and_replaces_it_on_rerun(world, tmp_path, capsys):
    store, _, cold, hybrid, knn, _ = world
    out = tmp_path / "r" / "blend.json"
    out.parent.mkdir()
    out.write_text(json.dumps({"rows": [{"model": "model-other@1", "chosen_w": 0.3}]}))
    argv = ["--store", str(store.root), "--split", cold, "--model", hybrid, "--knn", knn, "--out", str(out)]
    argv += ["--weights", "0,1"]
    assert cold_blend.main(argv) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert cold_blend.main(argv) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["model"] for r in rows] == sorted(["model-other@1", hybrid])  # replaced, not appended
    assert next(r for r in rows if r["model"] == hybrid)["curve"] == printed["curve"]


def _cases(rng, n_cases, n_items, n_neg=5):
    from mmiris.eval.protocols import CaseScores

    items = rng.integers(0, n_items, n_cases)
    hybrid = CaseScores(
        np.arange(n_cases),
        items,
        rng.normal(size=(n_cases, 1 + n_neg)).astype(np.float32),
        np.ones((n_cases, n_neg), bool),
        0,
    )
    knn = CaseScores(
        hybrid.users,
        items,
        rng.normal(size=(n_cases, 1 + n_neg)).astype(np.float32),
        np.ones((n_cases, n_neg), bool),
        0,
    )
    return hybrid, knn


def test_cross_fit_picks_each_folds_weight_on_the_other_folds_items_only():
    rng = np.random.default_rng(5)
    hybrid, knn = _cases(rng, 400, 12)
    # the held-out item ranks first under the hybrid for items 0-5 and under kNN for 6-11
    first = hybrid.items < 6
    hybrid.scores[first, 0], knn.scores[~first, 0] = 9.0, 9.0
    grid = [0.0, 0.5, 1.0]
    out = cold_blend.cross_fit(hybrid, knn, grid, folds=3, seed=1)
    # reference: plain loops over the same seeded deal of items into folds
    items = np.unique(hybrid.items)
    perm = np.random.default_rng(1).permutation(items).tolist()
    fold_of = {item: pos % 3 for pos, item in enumerate(perm)}
    ranks_at = {
        w: hybrid.ranks(
            w * cold_blend.standardise(hybrid.scores, hybrid.counted)
            + (1 - w) * cold_blend.standardise(knn.scores, knn.counted)
        )
        for w in grid
    }
    pooled = np.zeros(len(hybrid.items), np.int64)
    for f in range(3):
        rest = [c for c in range(len(hybrid.items)) if fold_of[int(hybrid.items[c])] != f]
        mine = [c for c in range(len(hybrid.items)) if fold_of[int(hybrid.items[c])] == f]

        def score(w, rest=rest):
            met = metrics_from_ranks(ranks_at[w][rest])
            return (round(float(met["hr10"]), 4), round(float(met["ndcg10"]), 4))

        w = max(grid, key=score)
        assert out["per_fold"][f]["w"] == w and out["per_fold"][f]["cases"] == len(mine)
        pooled[mine] = ranks_at[w][mine]
    met = metrics_from_ranks(pooled)
    assert out["test"] == {"hr10": round(float(met["hr10"]), 4), "ndcg10": round(float(met["ndcg10"]), 4)}
    # one weight in the grid: cross-fitting is that weight's own figure
    single = cold_blend.cross_fit(hybrid, knn, [0.5], folds=2)
    assert single["test"] == {k: cold_blend.blend_curve(hybrid, knn, [0.5])[0][k] for k in ("hr10", "ndcg10")}
    with pytest.raises(ValueError, match="--folds 1"):
        cold_blend.cross_fit(hybrid, knn, grid, folds=1)
    with pytest.raises(ValueError, match="only 12 items"):
        cold_blend.cross_fit(hybrid, knn, grid, folds=13)


def test_on_a_warm_split_validation_is_scored_as_it_is_and_nothing_is_cross_fitted(world):
    store, full, _, _, _, knn_full = world
    feats = {p.split("@")[0]: p for p in store.manifest(knn_full).parents if p.split("@")[0] in ("img", "txt")}
    cfg = TrainConfig(epochs=2, batch_size=64, threads=1)
    hybrid = str(
        train_model(
            store,
            full,
            "hybrid_iris",
            model_config={"emb": 4, "image_hidden": 6},
            train_config=cfg,
            image_features=feats["img"],
            text_features=feats["txt"],
        )
    )
    row = cold_blend.run(store, full, hybrid, knn_full, [0.0, 1.0])
    assert row["setting"] == "full" and row["cross_fit"] is None
    ends = {p["w"]: p for p in row["curve"]}
    split = load_split(store, full)
    model = load_model(store, hybrid)
    model.set_history(split.history())
    r = sampled_ranks(model, split.valid_users, split.valid_items, split.valid_negatives)  # no targets_as_new
    own = {k: round(float(v), 4) for k, v in metrics_from_ranks(r.ranks).items() if k in ("hr10", "ndcg10")}
    assert {"hr10": ends[1.0]["valid_hr10"], "ndcg10": ends[1.0]["valid_ndcg10"]} == own
    assert {k: ends[1.0][k] for k in ("hr10", "ndcg10")} == _own_metrics(store, full, hybrid)
