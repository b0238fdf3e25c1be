"""bf16 training precision against the fp32 reference: the policy, values and gradients of
every IRIS model under bf16 autocast within stated tolerances, attention untouched (fp32),
the evaluation cache exact, and a short training run learning the same model.

Tolerances (bf16 has an 8-bit mantissa, relative rounding 2^-9 ≈ 0.2% per operand; GEMMs
accumulate in fp32, but autocast rounds each layer's output to bf16, and a ReLU whose input
rounds across 0 switches its unit): scores within 2% of the score scale, each parameter's
gradient within 20% relative (Frobenius) of fp32 with cosine similarity ≥ 0.98 (observed
here: ≤ 13% and ≥ 0.991, the worst on biases of the small text tower). What the model learns is checked on top: a short training run gives
the same validation metrics, and docs/models.md gives a 1-epoch ML-1M comparison."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmiris.data.modality import ItemModality
from mmiris.data.split import UserHistory
from mmiris.errors import MmirisError
from mmiris.models import get_model_class
from mmiris.models.build import build_model
from mmiris.models.losses import pointwise_log_loss
from mmiris.train import config as C
from mmiris.train.config import TrainConfig, autocast, resolve_precision

N_USERS, N_ITEMS, K, H = 12, 60, 16, 16
IMG, TXT = 96, 48  # real encoders: 1280 / 384; the shapes of the arithmetic are the same
IRIS = ["image_iris", "image_add_text_iris", "multimodal_iris"]


def data(seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 45, N_USERS)
    lengths[0], lengths[1] = 0, 1
    users = np.repeat(np.arange(N_USERS), lengths)
    items = np.concatenate([rng.choice(N_ITEMS, n, replace=False) for n in lengths])
    history = UserHistory.from_pairs(users, items, N_USERS, N_ITEMS)
    feats = {
        m: ItemModality.from_arrays(
            m,
            np.arange(N_ITEMS),
            np.abs(rng.normal(size=(N_ITEMS, d))).astype(np.float32),
            rng.random(N_ITEMS) > 0.1,
            N_ITEMS,
        )
        for m, d in (("image", IMG), ("text", TXT))
    }
    targets = torch.from_numpy(rng.integers(0, N_ITEMS, size=(N_USERS, 10)))
    return history, feats, torch.arange(N_USERS), targets


def model_of(name, history, feats, **cfg):
    torch.manual_seed(1)
    base = {"emb": K, **cfg}
    if name != "fism":
        base["attention_size"] = H
    if name in IRIS or name == "hybrid_iris":
        base.setdefault("image_hidden", 64)
    cls = get_model_class(name)
    return build_model(name, base, N_USERS, N_ITEMS, history, {m: feats[m] for m in cls.modalities})


def loss_and_grads(model, users, targets, precision):
    model.zero_grad(set_to_none=True)
    labels = (torch.arange(targets.shape[1]) % 5 == 0).float().expand_as(targets)
    with autocast(precision, "cpu"):
        s = model.scores(users, targets)
        loss = pointwise_log_loss(s, labels, torch.ones_like(labels, dtype=torch.bool)) + model.regularization()
    loss.backward()
    return s.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# ---- the policy -----------------------------------------------------------------------------


def test_auto_is_bf16_only_for_towers_on_a_bf16_cpu(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(C, "cpu_has_bf16", lambda: True)
    assert resolve_precision("auto", get_model_class("multimodal_iris"), cpu) == "bf16"
    assert resolve_precision("auto", get_model_class("image_iris"), cpu) == "bf16"
    for name in ("nais_prod", "nais_concat", "fism", "mf"):
        assert resolve_precision("auto", get_model_class(name), cpu) == "fp32"
    assert resolve_precision("auto", get_model_class("multimodal_iris"), torch.device("cuda", 0)) == "fp32"
    monkeypatch.setattr(C, "cpu_has_bf16", lambda: False)
    assert resolve_precision("auto", get_model_class("multimodal_iris"), cpu) == "fp32"
    assert resolve_precision("bf16", get_model_class("nais_prod"), cpu) == "bf16"  # asked for: given
    assert resolve_precision("fp32", get_model_class("multimodal_iris"), cpu) == "fp32"


def test_precision_is_validated_and_part_of_the_key():
    with pytest.raises(MmirisError, match="precision 'half'"):
        TrainConfig(precision="half")
    assert TrainConfig(precision="bf16").key_params()["precision"] == "bf16"
    assert "precision" not in TrainConfig.RUNTIME


def test_cli_flag_sets_the_precision():
    import argparse

    from mmiris.cli import train as cli

    p = argparse.ArgumentParser()
    cli.register(p.add_subparsers())
    args = p.parse_args(["train", "--split", "s", "--model", "nais_prod", "--precision", "fp32"])
    assert args.precision == "fp32"
    assert p.parse_args(["train", "--split", "s", "--model", "nais_prod"]).precision == "auto"


# ---- numbers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", IRIS + ["multimodal_iris_two_shares", "multimodal_iris_no_share", "hybrid_iris"])
def test_bf16_values_and_gradients_match_fp32(name):
    history, feats, users, targets = data()
    cfg = {"multimodal_iris_two_shares": {}, "multimodal_iris_no_share": {"share": False}}.get(name, {})
    if name == "multimodal_iris":
        cfg = {"image_hidden": None}  # one W_share: image hidden = text dim
    if name == "hybrid_iris":
        cfg = {"content_dropout": 0.0}  # the two passes would drop different pairs
    model = model_of(name.split("_two")[0].split("_no_")[0], history, feats, **cfg)
    with torch.no_grad():  # attention far from uniform, towers in their active range
        for n, p in model.named_parameters():
            if n.startswith(("P.", "Q.", "item_bias")):
                p.normal_(0.0, 0.3)
            if n.startswith("content_"):  # hybrid_iris: a content part of p and q in play
                p.normal_(0.0, 0.1)
    s32, g32 = loss_and_grads(model, users, targets, "fp32")
    s16, g16 = loss_and_grads(model, users, targets, "bf16")
    assert s16.dtype == torch.float32  # the attention sums and the scores stay fp32
    scale = s32.abs().max()
    assert (s16 - s32).abs().max() <= 0.02 * scale, f"scores: {(s16 - s32).abs().max():.3g} vs scale {scale:.3g}"
    assert g16.keys() == g32.keys()
    for n, g in g32.items():
        if g.norm() == 0:
            assert g16[n].norm() == 0, n
            continue
        rel = (g16[n] - g).norm() / g.norm()
        cos = torch.nn.functional.cosine_similarity(g16[n].flatten(), g.flatten(), dim=0)
        assert rel <= 0.2 and cos >= 0.98, f"{name} d/d{n}: relative {rel:.3g}, cosine {cos:.5f}"
        assert model.get_parameter(n).dtype == torch.float32 and g16[n].dtype == torch.float32  # fp32 masters


@pytest.mark.parametrize("name", ["fism", "nais_prod", "nais_concat"])
def test_models_without_towers_are_exactly_fp32_under_bf16(name):
    history, feats, users, targets = data(1)
    model = model_of(name, history, feats)
    s32, g32 = loss_and_grads(model, users, targets, "fp32")
    s16, g16 = loss_and_grads(model, users, targets, "bf16")
    assert torch.equal(s16, s32)
    for n in g32:
        assert torch.equal(g16[n], g32[n]), n


@pytest.mark.parametrize("backend", ["fused", "eager"])
def test_attention_stays_fp32_inside_autocast(backend):
    history, feats, users, targets = data(2)
    model = model_of("multimodal_iris", history, feats)
    model.backend = backend
    with torch.no_grad():
        hist, hlen = model.history_of(users)
        PH, QT, att = model._parts(hist, targets)
        ref = model.similarity(hist, hlen, targets)
        with autocast("bf16", "cpu"):  # same inputs: the attention itself must not change
            from mmiris.models import attentive

            got = attentive.attentive_scores(
                PH, QT, hist, hlen, targets, model.h_vec, model.config.beta, model.config.alpha, backend=backend, **att
            )
    assert got.dtype == torch.float32
    assert torch.allclose(got, ref, rtol=1e-6, atol=1e-7)


def test_evaluation_cache_is_exact_and_released():
    history, feats, users, targets = data(3)
    model = model_of("multimodal_iris", history, feats, image_hidden=None)
    with torch.no_grad():
        ref = model.scores(users, targets)
        full_ref = torch.cat(
            [
                model.scores(users, torch.arange(c, min(c + 7, N_ITEMS)).expand(N_USERS, -1))
                for c in range(0, N_ITEMS, 7)
            ],
            1,
        )
        with model.cached_items():
            assert model._tables is not None
            got = model.scores(users, targets)
        assert model._tables is None
        model.score_chunk_items = 7
        full = model.score_all(users)
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert torch.allclose(full, full_ref, rtol=1e-5, atol=1e-6)
    # with gradients on, the cache is never used (it holds no graph)
    with model.cached_items():
        s = model.scores(users, targets)
    assert s.requires_grad


def test_bf16_training_learns_the_same_model():
    """A short run of the real trainer in bf16 and fp32: same validation metrics."""
    from mmiris.data.split import SplitData
    from mmiris.train.trainer import train

    rng = np.random.default_rng(0)
    n_users, n_items = 60, 40
    tu, ti, vu, vi, vn = [], [], [], [], []
    for u in range(n_users):  # 4 taste groups of 10 items: learnable in a few epochs
        own = np.arange(10) + 10 * (u % 4)
        liked = rng.choice(own, size=8, replace=False)
        vu.append(u)
        vi.append(liked[0])
        vn.append(rng.choice(np.setdiff1d(np.arange(n_items), own), size=20, replace=False))
        tu += [u] * 7
        ti += liked[1:].tolist()
    split = SplitData(
        None,
        n_users,
        n_items,
        np.array(tu),
        np.array(ti),
        np.array(vu),
        np.array(vi),
        np.array(vn),
        np.array(vu),
        np.array(vi),
        np.array(vn),
    )
    feats = {
        m: ItemModality.from_arrays(
            m,
            np.arange(n_items),
            np.abs(rng.normal(size=(n_items, d))).astype(np.float32),
            np.ones(n_items, bool),
            n_items,
        )
        for m, d in (("image", IMG), ("text", TXT))
    }
    out = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = build_model("multimodal_iris", {"emb": K, "image_hidden": 64}, n_users, n_items, split.history(), feats)
        res = train(
            model, split, TrainConfig(epochs=4, batch_size=64, lr=0.01, patience=10, threads=1, precision=precision)
        )
        out[precision] = res
    a, b = out["fp32"].best_metrics, out["bf16"].best_metrics
    assert a["hr10"] > 0.8  # it learned something
    assert abs(a["hr10"] - b["hr10"]) <= 0.05 and abs(a["ndcg10"] - b["ndcg10"]) <= 0.05, (a, b)
    epoch_loss = {p: [r["value"] for r in out[p].log if r["metric"] == "train_loss"] for p in out}
    assert np.allclose(epoch_loss["bf16"], epoch_loss["fp32"], rtol=0.05, atol=0.02), epoch_loss


def test_model_artifact_records_precision_and_attention_backend(store):
    from test_train_trainer import publish_tiny_split

    from mmiris.models import attentive
    from mmiris.pipelines.train import train_model

    split = publish_tiny_split(store)
    ref = train_model(
        store,
        split,
        "nais_prod",
        model_config={"emb": 8, "attention_size": 8},
        train_config=TrainConfig(epochs=1, batch_size=64, threads=1),
    )
    m = store.manifest(ref)
    assert m.params["train_config"]["precision"] == "fp32"  # "auto" resolved before it keys the version
    assert m.info["precision"] == "fp32"
    assert m.info["attention_backend"] == ("fused-op" if attentive.fused_available() else "eager")
    bf = train_model(
        store,
        split,
        "nais_prod",
        model_config={"emb": 8, "attention_size": 8},
        train_config=TrainConfig(epochs=1, batch_size=64, threads=1, precision="bf16"),
    )
    assert bf != ref and store.manifest(bf).info["precision"] == "bf16"
