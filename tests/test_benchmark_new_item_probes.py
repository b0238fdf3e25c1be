"""benchmarks.new_item_probes on a tiny cold-item split with random feature vectors (no
../shared/data): the plain ends of each probe's grid must be the models' own evaluate-stage
rankings, and the pooling is checked against a loop over its definition."""

import json

import numpy as np
import pytest
import torch
from test_benchmark_cold_blend import _own_metrics
from test_benchmark_modality_knn import _features, tiny_movielens

from benchmarks import new_item_probes as probes
from mmiris.data.split import UserHistory, load_split
from mmiris.eval.metrics import metrics_from_ranks
from mmiris.eval.protocols import sampled_ranks
from mmiris.models.build import load_model
from mmiris.pipelines.split import derive_split
from mmiris.pipelines.train import train_model
from mmiris.train.config import TrainConfig

N_USERS, N_MOVIES = 24, 60
PATH = {"emb": 4, "image_hidden": 6, "content_similarity": 4, "content_metric": True, "new_items": "similarity"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    store, _, full, n_items = tiny_movielens(tmp_path_factory.mktemp("probes"), N_USERS, N_MOVIES, 10)
    split = str(derive_split(store, full, cold_items=0.3, seed=0, name="split_cold", n_negatives=4, cold_valid=0.1))
    feats = {
        "image_features": _features(store, "img", "image_features", 6, n_items, 1),
        "text_features": _features(store, "txt", "text_features", 4, n_items, 2),
    }
    models = [
        str(
            train_model(
                store,
                split,
                "hybrid_iris",
                model_config=PATH,
                train_config=TrainConfig(
                    epochs=2, batch_size=64, threads=1, seed=seed, negatives_from="trained", select_on="cold"
                ),
                **feats,
            )
        )
        for seed in (0, 1)
    ]
    knn = str(train_model(store, split, "content_knn", **feats))
    return store, split, models, knn


class Args:
    taus, ks, lambdas, weights = [0.0, 1.0, 50.0], [1, 1000], [1e-6, 10.0], [0.0, 0.5, 1.0]


def _metrics(row):
    return {"hr10": row["hr10"], "ndcg10": row["ndcg10"]}, {"hr10": row["valid_hr10"], "ndcg10": row["valid_ndcg10"]}


def _own(store, split, ref):
    """The model's evaluate-stage test figures, and its validation ones (as new items where it
    has learned rows to zero; content kNN has none)."""
    if load_model(store, ref).name == "content_knn":
        s = load_split(store, split)
        r = sampled_ranks(load_model(store, ref), s.valid_users, s.valid_items, s.valid_negatives).ranks
        valid = {k: round(float(v), 4) for k, v in metrics_from_ranks(r).items() if k in ("hr10", "ndcg10")}
        return _own_metrics(store, split, ref), valid
    return _own_metrics(store, split, ref), _own_metrics(store, split, ref, valid=True)


def test_ensemble_rows_cover_every_subset_and_single_models_rank_as_their_own(world):
    store, split, models, _ = world
    out = probes.run(store, "ensemble", split, models, None, Args)
    assert [r["members"] for r in out["rows"]] == [[0], [1], [0, 1]]
    for k, ref in enumerate(models):
        assert _metrics(out["rows"][k]) == _own(store, split, ref)
    assert [s["size"] for s in out["summary"]] == [1, 2]
    assert out["summary"][0]["hr10"] == round((out["rows"][0]["hr10"] + out["rows"][1]["hr10"]) / 2, 4)
    # a model summed with itself ranks as it does alone (each member's scores are standardised)
    twice = probes.run(store, "ensemble", split, [models[0], models[0]], None, Args)
    assert _metrics(twice["rows"][2]) == _metrics(twice["rows"][0])


def test_mean_pooling_ranks_as_the_models_own_path_and_as_content_knn(world):
    store, split, models, knn = world
    out = probes.run(store, "pooling", split, models, knn, Args)
    rows = {(r["source"], r["pooling"]): r for r in out["rows"]}
    assert set(rows) == {(s, p) for s in ["content_knn", *models] for p in ("tau0", "tau1", "tau50", "top1", "top1000")}
    for src, ref in [("content_knn", knn)] + [(m, m) for m in models]:
        own = _own(store, split, ref)
        # τ = 0 is the plain mean; the top 1,000 of a history shorter than that is the mean too
        assert _metrics(rows[(src, "tau0")]) == own and _metrics(rows[(src, "top1000")]) == own
        assert out["picked"][src] == max(
            (r for r in out["rows"] if r["source"] == src), key=lambda r: (r["valid_hr10"], r["valid_ndcg10"])
        )


def test_pooled_scores_against_a_loop_over_the_definition():
    rng = np.random.default_rng(0)
    n_items, d = 9, 3
    H, T = torch.randn(n_items, d), torch.randn(n_items, d)
    users = np.array([0, 1, 0, 2])
    history = UserHistory.from_pairs(
        np.array([0, 0, 0, 1, 1, 2]), np.array([1, 2, 3, 4, 5, 6]), n_users=3, n_items=n_items
    )
    cands = rng.integers(0, n_items, size=(4, 5))
    cands[0, 0] = 2  # a candidate in its own user's history: left out of the pooling
    cands[3, 1] = 6  # user 2 has seen item 6 alone: nothing left to pool
    sigma = 0.7
    got = probes.pooled_scores(H, T, history, users, cands, [0.0, 2.0], [2], sigma)
    for c, u in enumerate(users):
        for t, j in enumerate(cands[c]):
            s = [float(H[i] @ T[j]) for i in history.items_of(u) if i != j]
            if not s:  # the history is j alone: nothing to pool, as in the model's path
                assert got["tau0"][c, t] == got["tau2"][c, t] == got["top2"][c, t] == 0.0
                continue
            w = np.exp(2.0 * np.array(s) / sigma)
            assert got["tau0"][c, t] == pytest.approx(np.mean(s), abs=1e-5)
            assert got["tau2"][c, t] == pytest.approx(float((w / w.sum()) @ s), abs=1e-5)
            assert got["top2"][c, t] == pytest.approx(np.mean(sorted(s)[::-1][:2]), abs=1e-5)


def test_popularity_prior_at_zero_weight_is_content_knn_and_fits_log_counts(world, tmp_path, capsys):
    store, split, _, knn = world
    out = probes.run(store, "popularity", split, [], knn, Args)
    own = _own(store, split, knn)
    for r in out["rows"]:
        if r["w"] == 0.0:
            assert _metrics(r) == own
    assert len(out["rows"]) == len(Args.lambdas) * len(Args.weights)
    # the prior is log(1 + training interactions): with as many features as items it interpolates
    counts = np.array([0, 3, 1, 7, 2, 0])
    fit = counts > 0
    pop = probes.predicted_popularity(np.eye(6) + 0.01, counts, fit, 1e-9)
    assert np.allclose(pop[fit], np.log1p(counts[fit]), atol=1e-4)
    # the command line: --knn is required, a rerun replaces its entry
    path = tmp_path / "probes.json"
    argv = ["popularity", "--store", str(store.root), "--split", split, "--out", str(path)]
    assert probes.main(argv) == 2 and "needs --knn" in capsys.readouterr().err
    assert probes.main([*argv, "--knn", knn, "--lambdas", "10", "--weights", "0,1"]) == 0
    assert probes.main([*argv, "--knn", knn, "--lambdas", "100", "--weights", "0,1"]) == 0
    saved = json.loads(path.read_text())["rows"]
    assert len(saved) == 1 and {r["lam"] for r in saved[0]["rows"]} == {100.0}
