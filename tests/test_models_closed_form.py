"""Closed-form and reference models: EASE against numpy's closed form, ItemPop counts,
NAIS pretraining from FISM, NeuMF pretraining from GMF + MLP, registry and configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmiris.data.split import SplitData
from mmiris.models import get_model_class, model_names
from mmiris.models.build import build_model

PAPER_MODELS = {
    "itempop",
    "mf",
    "ease",
    "fism",
    "nais_prod",
    "nais_concat",
    "image_iris",
    "image_add_text_iris",
    "multimodal_iris",
    "vbpr",
    "neumf",
}


def _split(n_users=30, n_items=25, seed=0):
    rng = np.random.default_rng(seed)
    pairs = {(u, i) for u in range(n_users) for i in rng.choice(n_items, rng.integers(1, 12), replace=False)}
    users, items = map(np.array, zip(*sorted(pairs)))
    empty = np.zeros(0, dtype=np.int64)
    return SplitData(
        None,
        n_users,
        n_items,
        users,
        items,
        empty,
        empty,
        np.zeros((0, 0), np.int64),
        empty,
        empty,
        np.zeros((0, 0), np.int64),
    )


def test_registry_has_every_model_of_the_paper():
    assert PAPER_MODELS <= set(model_names())
    with pytest.raises(KeyError, match="unknown model"):
        get_model_class("nope")


def test_configs_round_trip_and_reject_unknown_fields():
    for name in PAPER_MODELS:
        cls = get_model_class(name)
        cfg = cls.config_cls()
        assert cls.config_cls.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown field"):
        get_model_class("fism").config_cls.from_dict({"emb": 16, "bogus": 1})
    assert get_model_class("multimodal_iris").config_cls().beta == 0.8  # §IV-D
    assert get_model_class("multimodal_iris").config_cls().alpha == 0.0
    assert get_model_class("nais_prod").config_cls().beta == 0.5  # NAIS paper


def test_ease_equals_numpy_closed_form():
    split = _split()
    lam = 7.0
    model = build_model("ease", {"l2": lam}, split.n_users, split.n_items, split.history())
    assert not model.trainable
    model.fit(split)
    X = split.history().to_dense().astype(np.float64)
    G = X.T @ X + lam * np.eye(split.n_items)
    P = np.linalg.inv(G)
    B = np.eye(split.n_items) - P / np.diag(P)  # Steck 2019, eq. 8
    np.testing.assert_allclose(np.diag(B), 0.0, atol=1e-12)
    want = X @ B
    users = torch.arange(split.n_users)
    np.testing.assert_allclose(model.score_all(users).numpy(), want, rtol=1e-4, atol=1e-5)
    items = torch.randint(0, split.n_items, (split.n_users, 4))
    np.testing.assert_allclose(
        model.scores(users, items).numpy(), np.take_along_axis(want, items.numpy(), 1), rtol=1e-4, atol=1e-5
    )


def test_itempop_scores_by_training_counts():
    split = _split()
    model = build_model("itempop", None, split.n_users, split.n_items)
    model.fit(split)
    counts = np.bincount(split.train_items, minlength=split.n_items)
    s = model.score_all(torch.arange(3))
    assert s.shape == (3, split.n_items)
    assert np.array_equal(np.argsort(-counts, kind="stable"), np.argsort(-s[0].numpy(), kind="stable"))


def test_nais_starts_from_trained_fism():
    split = _split()
    h = split.history()
    fism = build_model("fism", {"emb": 8}, split.n_users, split.n_items, h)
    for name in ["nais_prod", "nais_concat"]:
        nais = build_model(name, {"emb": 8}, split.n_users, split.n_items, h)
        nais.init_from(fism)
        assert torch.equal(nais.P.weight, fism.P.weight) and torch.equal(nais.Q.weight, fism.Q.weight)
    with pytest.raises(ValueError, match="cannot init"):
        build_model("nais_prod", {"emb": 16}, split.n_users, split.n_items, h).init_from(fism)


def test_neumf_from_pretrained_gmf_and_mlp():
    split = _split()
    torch.manual_seed(0)
    gmf = build_model("neumf", {"emb": 8, "mode": "gmf"}, split.n_users, split.n_items)
    mlp = build_model("neumf", {"emb": 8, "mode": "mlp"}, split.n_users, split.n_items)
    fused = type(gmf).from_pretrained(gmf, mlp, alpha=0.3)
    users, items = torch.arange(5), torch.randint(0, split.n_items, (5, 3))
    with torch.no_grad():
        want = 0.3 * gmf.scores(users, items) + 0.7 * mlp.scores(users, items)
        assert torch.allclose(fused.scores(users, items), want, atol=1e-6)


def test_paper_initialisation():
    split = _split(n_users=400, n_items=300)
    torch.manual_seed(0)
    m = build_model("nais_concat", {"emb": 16}, split.n_users, split.n_items, split.history())
    assert abs(float(m.P.weight.detach().std()) - 0.01) < 1e-3  # N(0, 0.01) embeddings
    assert float(m.W.bias.detach().abs().sum()) == 0.0 and float(m.item_bias.detach().abs().sum()) == 0.0  # zero biases
    bound = (6 / (32 + 16)) ** 0.5  # Xavier uniform on W [16 x 32]
    w = m.W.weight.detach().abs().max()
    assert float(w) <= bound and float(w) > 0.8 * bound


def test_history_is_required_by_item_similarity_models():
    with pytest.raises(ValueError, match="histories"):
        build_model("fism", None, 3, 4)
    with pytest.raises(ValueError, match="features"):
        build_model("vbpr", None, 3, 4)


def test_regularization_is_eq12_l2():
    split = _split()
    m = build_model(
        "nais_prod", {"emb": 8, "reg_emb": 0.1, "reg_attention": 0.01}, split.n_users, split.n_items, split.history()
    )
    want = 0.1 * (m.P.weight.pow(2).sum() + m.Q.weight.pow(2).sum()) + 0.01 * m.W.weight.pow(2).sum()
    assert torch.allclose(m.regularization(), want)
