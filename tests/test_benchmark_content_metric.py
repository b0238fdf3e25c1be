"""benchmarks.content_metric: the learned content-only similarity on a tiny cold-item split with
random feature vectors (no ../shared/data). At its start (directions spanning every content
vector) it must rank exactly as content kNN does; its scores and BPR loss are checked against
plain loops; the command writes one row per split and config."""

import json

import numpy as np
import pytest
import torch
from test_benchmark_modality_knn import _features, tiny_movielens

from benchmarks import content_metric
from mmiris.data.split import UserHistory, load_split
from mmiris.eval.metrics import metrics_from_ranks
from mmiris.eval.protocols import sampled_ranks
from mmiris.models.build import load_model
from mmiris.pipelines.split import derive_split
from mmiris.pipelines.train import train_model

N_USERS, N_MOVIES = 24, 60


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    store, _, full, n_items = tiny_movielens(tmp_path_factory.mktemp("content_metric"), N_USERS, N_MOVIES, 10)
    cold = str(derive_split(store, full, cold_items=0.3, seed=0, name="split_cold", n_negatives=4))
    feats = {
        "image_features": _features(store, "img", "image_features", 6, n_items, 1),
        "text_features": _features(store, "txt", "text_features", 4, n_items, 2),
    }
    knn = str(train_model(store, cold, "content_knn", **feats))
    return store, cold, knn


def _cfg(**kw):
    return {"d": 16, "epochs": 2, "lr": 1e-2, "negatives": 2, "batch_size": 32, "feature_dropout": 0.5, "seed": 0, **kw}


def test_at_its_start_it_ranks_as_content_knn(world):
    """Epoch 0 with directions spanning C (10 content dimensions, d = 16): c_i M_p · c_j M_q =
    c_i·c_j, so validation and test figures are content kNN's own evaluate-stage ranking."""
    store, cold, knn = world
    row = content_metric.run(store, cold, knn, _cfg())
    split, model = load_split(store, cold), load_model(store, knn)
    model.set_history(split.history())
    want = {}
    for part in ("valid", "test"):
        r = sampled_ranks(
            model, getattr(split, f"{part}_users"), getattr(split, f"{part}_items"), getattr(split, f"{part}_negatives")
        )
        want[part] = {k: round(float(v), 4) for k, v in metrics_from_ranks(r.ranks).items() if k in ("hr10", "ndcg10")}
    start = row["epochs"][0]
    assert start["epoch"] == 0 and start["loss"] is None
    assert {"hr10": start["hr10"], "ndcg10": start["ndcg10"]} == want["test"]
    assert {"hr10": start["valid_hr10"], "ndcg10": start["valid_ndcg10"]} == want["valid"]
    assert [r["epoch"] for r in row["epochs"]] == [0, 1, 2] and all(r["loss"] > 0 for r in row["epochs"][1:])
    assert row["setting"] == "cold" and row["selected"] == content_metric.selected(row["epochs"])


def _tiny_model(seed=0):
    g = torch.Generator().manual_seed(seed)
    C = torch.randn(7, 5, generator=g)
    users = np.array([0, 0, 0, 1, 1, 2])
    items = np.array([1, 3, 4, 0, 4, 2])
    history = UserHistory.from_pairs(users, items, 3, 7)
    model = content_metric.ContentMetric(C, history, 3)
    with torch.no_grad():
        model.Mp.normal_(generator=g)
        model.Mq.normal_(generator=g)
    return model, C, history


def test_scores_and_bpr_loss_against_loops():
    model, C, history = _tiny_model()
    Mp, Mq = model.Mp.detach(), model.Mq.detach()

    def ref(u, j, leave_out):
        hist = [int(i) for i in history.items_of(u) if not (leave_out and int(i) == j)]
        if not hist:
            return 0.0
        pu = sum(C[i] @ Mp for i in hist) / len(hist)
        return float(pu @ (C[j] @ Mq))

    users, cand = torch.tensor([0, 1, 2]), torch.tensor([[0, 2, 5], [1, 3, 6], [0, 5, 6]])
    got = model.scores(users, cand).detach()
    for b, u in enumerate(users.tolist()):
        for c, j in enumerate(cand[b].tolist()):
            assert got[b, c].item() == pytest.approx(ref(u, j, False), rel=1e-5, abs=1e-6)

    pos, neg = torch.tensor([3, 4, 2]), torch.tensor([[0, 5], [1, 6], [2, 6]])  # user 2's only item: empty history
    loss = model.bpr_loss(torch.tensor([0, 1, 2]), pos, neg, model.Mp, model.Mq)
    terms = [
        -np.log(1 / (1 + np.exp(-(ref(u, int(p), True) - ref(u, int(n), False)))))
        for u, p, ns in zip([0, 1, 2], pos, neg)
        for n in ns
    ]
    assert float(loss.detach()) == pytest.approx(np.mean(terms), rel=1e-5)


def test_feature_dropout_drops_whole_content_dimensions_per_projection():
    model, _, _ = _tiny_model()
    Mp, Mq = model.masked(0.5, torch.Generator().manual_seed(1))  # both masks keep some, drop some
    for M, full in ((Mp, model.Mp), (Mq, model.Mq)):
        kept = M.detach().abs().sum(1) > 0
        assert 0 < int(kept.sum()) < 5
        assert torch.allclose(M[kept], full[kept] * 2.0)
    assert model.masked(0.0, torch.Generator()) == (model.Mp, model.Mq)


def test_main_writes_one_row_per_split_and_config_and_replaces_it(world, tmp_path, capsys):
    store, cold, knn = world
    out = tmp_path / "cm.json"
    args = ["--store", str(store.root), "--split", cold, "--knn", knn, "--d", "4", "--epochs", "1", "--out", str(out)]
    assert content_metric.main(args) == 0
    assert content_metric.main(args) == 0
    assert content_metric.main([*args[:-2], "--d", "8", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert sorted(r["config"]["d"] for r in rows) == [4, 8]
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["config"]["d"] == 8 and len(printed["epochs"]) == 2
    capsys.readouterr()
    other = str(train_model(store, cold, "itempop"))  # a model, but not content kNN
    assert content_metric.main([*args[:4], "--knn", other, "--out", str(out)]) == 2
    assert "is a itempop model; expected content_knn" in capsys.readouterr().err
    assert content_metric.main([*args, "--feature-dropout", "1"]) == 2
    assert "--feature-dropout must be in [0, 1)" in capsys.readouterr().err
    assert len(json.loads(out.read_text())["rows"]) == 2  # refusals wrote nothing
