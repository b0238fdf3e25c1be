"""Every model against a slow, obviously-correct reference: Python loops over the paper's
equations on tiny data, values AND gradients, for the fused kernel and the eager path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmiris.data.modality import ItemModality
from mmiris.data.split import UserHistory
from mmiris.models import attentive
from mmiris.models.build import build_model

N_USERS, N_ITEMS = 8, 40
LENGTHS = [0, 1, 2, 5, 13, 40, 37, 3]  # empty, single, and longer than one kernel block (32)
K, H, IMG, TXT = 8, 8, 12, 8


def tiny_data(seed=0, all_missing=False):
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(N_USERS), LENGTHS)
    items = np.concatenate([rng.choice(N_ITEMS, n, replace=False) for n in LENGTHS])
    history = UserHistory.from_pairs(users, items, N_USERS, N_ITEMS)
    T = 6
    targets = rng.integers(0, N_ITEMS, size=(N_USERS, T))
    for u in range(N_USERS):  # first target is a history item: it must be excluded from R_u⁺
        own = history.items_of(u)
        if len(own):
            targets[u, 0] = own[rng.integers(len(own))]
    targets[0, 1] = targets[0, 2]  # duplicate target in a row
    present_img = rng.random(N_ITEMS) > 0.25
    present_txt = rng.random(N_ITEMS) > 0.25
    if all_missing:
        present_img[:] = present_txt[:] = False
    feats = {
        "image": ItemModality.from_arrays(
            "image", np.arange(N_ITEMS), rng.normal(size=(N_ITEMS, IMG)).astype(np.float32), present_img, N_ITEMS
        ),
        "text": ItemModality.from_arrays(
            "text", np.arange(N_ITEMS), rng.normal(size=(N_ITEMS, TXT)).astype(np.float32), present_txt, N_ITEMS
        ),
    }
    return history, torch.arange(N_USERS), torch.from_numpy(targets), feats


def make(name, history, feats, seed=1, **cfg):
    torch.manual_seed(seed)
    base = dict(emb=K)
    if name in ("nais_prod", "nais_concat", "image_iris", "image_add_text_iris", "multimodal_iris"):
        base["attention_size"] = H
    if name in ("image_iris", "image_add_text_iris", "multimodal_iris", "hybrid_iris"):
        base["image_hidden"] = 6  # the 768 default: same equations, fp32 rounding past the tolerances
    base.update(cfg)
    model = build_model(name, base, N_USERS, N_ITEMS, history, feats)
    with torch.no_grad():  # large random parameters: attention far from uniform
        for p in model.parameters():
            p.normal_(0.0, 0.4)
    return model


# ---- references: one (user, target) at a time, straight from the equations -----------------


def ref_item_similarity(model, history, u, j, logit):
    """Eq. 5: |R⁺\\{j}|^-α Σ a_ij p_i·q_j with a_ij = exp(e_ij) / (Σ exp(e))^β (eq. 4)."""
    c = model.config
    hist = [int(i) for i in history.items_of(u) if int(i) != j]
    s = torch.zeros(())
    if hist:
        es = [logit(i, j) for i in hist]
        denom = sum(torch.exp(e) for e in es) ** getattr(c, "beta", 1.0)
        for i, e in zip(hist, es):
            a = torch.exp(e) / denom if logit is not None else 1.0
            s = s + a * torch.dot(model.P.weight[i], model.Q.weight[j])
        s = s * len(hist) ** (-c.alpha)
    if model.item_bias is not None:
        s = s + model.item_bias[j]
    return s


def ref_fism(model, history, u, j):
    hist = [int(i) for i in history.items_of(u) if int(i) != j]
    s = sum((model.P.weight[i] for i in hist), torch.zeros(K))
    s = torch.dot(s, model.Q.weight[j]) * (len(hist) ** -model.config.alpha if hist else 0.0)
    return s + model.item_bias[j]


def nais_logit(model, prod):
    def f(i, j):
        p, q = model.P.weight[i], model.Q.weight[j]
        x = p * q if prod else torch.cat([p, q])
        return torch.dot(model.h.weight[0], torch.relu(model.W.weight @ x + model.W.bias))

    return f


def ref_towers(model, i):
    """v_i, t_i of eq. 7–8 for one item, layer by layer (missing modality = zero vector)."""
    act = torch.relu
    out = {}
    pv = float(model.image_present[i]) if "image" in model.modalities else 0.0
    pt = float(model.text_present[i]) if "text" in model.modalities else 0.0
    if "image" in model.modalities:
        v0 = model.image_features[i] * pv
        v1 = act(model.image1.weight @ v0 + model.image1.bias) * pv
        pre = model.image2.weight @ v1 + model.image2.bias
    if "text" in model.modalities:
        t0 = model.text_features[i] * pt
        tpre = model.text1.weight @ t0 + model.text1.bias
    if getattr(model, "share_t2v", None) is not None:
        W_share_t = model.share_t2v.weight
        W_share_v = model.share_v2t.weight if model.share_v2t is not None else W_share_t
        pre = pre + W_share_t @ t0  # eq. 7
        tpre = tpre + W_share_v @ v1  # eq. 8
    if "image" in model.modalities:
        out["image"] = act(pre) * pv
    if "text" in model.modalities:
        out["text"] = act(tpre) * pt
    return out


def iris_logit(model):
    towers = {i: ref_towers(model, i) for i in range(N_ITEMS)}  # each item's towers once (memo only)

    def f(i, j):
        vi, vj = towers[i], towers[j]
        x = model.irn_bias.clone()
        for m in model.modalities:  # W1 v_i + W2 v_j (+ W3 t_i + W4 t_j) + b, eq. 4/6
            x = x + model.irn_hist[m].weight @ vi[m] + model.irn_target[m].weight @ vj[m]
        return torch.dot(model.h.weight[0], torch.relu(x))

    return f


def ref_mf(model, history, u, j):
    return (
        torch.dot(model.user.weight[u], model.item.weight[j])
        + model.user_bias[u]
        + model.item_bias[j]
        + model.global_bias
    )


def ref_vbpr(model, history, u, j):
    f = model.image_features[j]
    return (
        model.global_bias
        + model.user_bias[u]
        + model.item_bias[j]
        + torch.dot(model.gamma_user.weight[u], model.gamma_item.weight[j])
        + torch.dot(model.theta_user.weight[u], model.E.weight @ f)
        + torch.dot(model.visual_bias.weight[0], f)
    )


def ref_neumf(model, history, u, j):
    parts = []
    if model.use_gmf:
        parts.append(model.gmf_user.weight[u] * model.gmf_item.weight[j])
    if model.use_mlp:
        x = torch.cat([model.mlp_user.weight[u], model.mlp_item.weight[j]])
        for layer in model.mlp:
            x = torch.relu(layer.weight @ x + layer.bias)
        parts.append(x)
    return torch.dot(model.out.weight[0], torch.cat(parts)) + model.out.bias[0]


REFERENCES = {
    "mf": (ref_mf, {}),
    "fism": (ref_fism, {}),
    "fism_alpha": (ref_fism, {"alpha": 0.5}),
    "nais_prod": (lambda m, h, u, j: ref_item_similarity(m, h, u, j, nais_logit(m, True)), {}),
    "nais_concat": (lambda m, h, u, j: ref_item_similarity(m, h, u, j, nais_logit(m, False)), {"alpha": 0.3}),
    "image_iris": (lambda m, h, u, j: ref_item_similarity(m, h, u, j, iris_logit(m)), {}),
    "image_add_text_iris": (lambda m, h, u, j: ref_item_similarity(m, h, u, j, iris_logit(m)), {"beta": 1.0}),
    "multimodal_iris": (lambda m, h, u, j: ref_item_similarity(m, h, u, j, iris_logit(m)), {}),
    "multimodal_iris_two_shares": (
        lambda m, h, u, j: ref_item_similarity(m, h, u, j, iris_logit(m)),
        {"image_hidden": 6, "alpha": 0.5},
    ),
    "multimodal_iris_one_share": (
        lambda m, h, u, j: ref_item_similarity(m, h, u, j, iris_logit(m)),
        {"image_hidden": None},
    ),  # hidden = text dim: one W_share (eq. 7–8)
    "multimodal_iris_no_share": (lambda m, h, u, j: ref_item_similarity(m, h, u, j, iris_logit(m)), {"share": False}),
    "vbpr": (ref_vbpr, {}),
    "neumf": (ref_neumf, {}),
    "neumf_gmf": (ref_neumf, {"mode": "gmf"}),
    "neumf_mlp": (ref_neumf, {"mode": "mlp"}),
}
ATTENTIVE = {"nais_prod", "nais_concat", "image_iris", "image_add_text_iris", "multimodal_iris"}


def _grads(model, fn):
    model.zero_grad()
    out = fn()
    w = torch.linspace(-1.0, 1.5, out.numel()).view_as(out)
    (out * w).sum().backward()
    return out.detach(), {
        n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in model.named_parameters()
    }


def _close(a, b, what):
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), f"{what}: max diff {(a - b).abs().max():.3g}"


def _model_name(case):
    name = case.split("_alpha")[0].replace("_two_shares", "").replace("_no_share", "").replace("_one_share", "")
    return {"neumf_gmf": "neumf", "neumf_mlp": "neumf"}.get(name, name)


CASES = [(c, False) for c in sorted(REFERENCES)] + [
    (c, True) for c in sorted(REFERENCES) if _model_name(c) in {"vbpr", "image_iris", "multimodal_iris"}
]


@pytest.mark.parametrize(
    "case,all_missing", CASES, ids=[f"{c}{'-all_features_missing' if m else ''}" for c, m in CASES]
)
def test_model_equals_reference(case, all_missing):
    name = _model_name(case)
    ref_fn, cfg = REFERENCES[case]
    history, users, targets, feats = tiny_data(all_missing=all_missing)
    model = make(name, history, feats, **cfg)
    ref, ref_g = _grads(
        model,
        lambda: torch.stack(
            [torch.stack([ref_fn(model, history, int(u), int(j)) for j in targets[b]]) for b, u in enumerate(users)]
        ),
    )
    backends = ["eager", "fused"] if name in ATTENTIVE else [None]
    for backend in backends:
        if backend:
            model.backend = backend
        got, got_g = _grads(model, lambda m=model: m.scores(users, targets))
        _close(got, ref, f"{case}/{backend} scores")
        for n in ref_g:
            _close(got_g[n], ref_g[n], f"{case}/{backend} d/d{n}")


def test_fused_kernel_is_available_here():
    # this machine has gcc: the fast path must really run (not silently fall back)
    assert attentive.fused_available()


@pytest.mark.parametrize("name", sorted(ATTENTIVE))
def test_attention_weights_match_reference(name):
    history, users, targets, feats = tiny_data(seed=3)
    model = make(name, history, feats)
    hist, a, mask = model.attention(users, targets)
    logit = nais_logit(model, name == "nais_prod") if name.startswith("nais") else iris_logit(model)
    beta = model.config.beta
    with torch.no_grad():
        for b, u in enumerate(users.tolist()):
            own = [int(i) for i in history.items_of(u)]
            assert hist[b, : len(own)].tolist() == own and mask[b].sum() == len(own)
            for t, j in enumerate(targets[b].tolist()):
                keep = [i for i in own if i != j]
                es = {i: logit(i, j) for i in keep}
                denom = sum(torch.exp(e) for e in es.values()) ** beta if keep else 1.0
                for l, i in enumerate(own):
                    want = float(torch.exp(es[i]) / denom) if i in es else 0.0
                    assert math.isclose(float(a[b, t, l]), want, rel_tol=1e-4, abs_tol=1e-6)
            assert float(a[b, :, len(own) :].abs().sum()) == 0.0  # padding carries no weight


def test_empty_history_after_excluding_target_scores_zero_with_finite_gradients():
    history, _, _, feats = tiny_data()
    for name in ["fism", "nais_prod", "nais_concat", "multimodal_iris"]:
        model = make(name, history, feats)
        for backend in ["eager", "fused"]:
            model.backend = backend
            only = int(history.items_of(1)[0])  # user 1 has exactly one history item
            users, items = torch.tensor([1, 0]), torch.tensor([[only, only], [only, 5]])  # user 0: no history at all
            model.zero_grad()
            s = model.scores(users, items)
            s.sum().backward()
            bias = model.item_bias[items].detach()
            assert torch.allclose(s.detach(), bias), (name, backend)  # similarity part is 0
            assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_eager_chunking_long_history_equals_unchunked(monkeypatch):
    history, users, targets, feats = tiny_data(seed=5)
    for name in ["nais_prod", "multimodal_iris"]:
        model = make(name, history, feats)
        model.backend = "eager"
        full, full_g = _grads(model, lambda m=model: m.scores(users, targets))
        monkeypatch.setattr(attentive, "EAGER_CHUNK_ELEMS", 2000)  # 6 rows × 1 target per chunk
        got, got_g = _grads(model, lambda m=model: m.scores(users, targets))
        monkeypatch.undo()
        _close(got, full, f"{name} chunked")
        for n in full_g:
            _close(got_g[n], full_g[n], f"{name} chunked d/d{n}")


@pytest.mark.parametrize(
    "name", ["mf", "fism", "nais_prod", "nais_concat", "multimodal_iris", "vbpr", "neumf", "itempop", "ease"]
)
def test_score_all_in_chunks_equals_scores(name):
    history, users, _, feats = tiny_data(seed=7)
    model = make(name, history, feats)
    if not model.trainable:
        model.fit(None) if name == "ease" else None
    model.score_chunk_items = 7  # several chunks, the last one short
    with torch.no_grad():
        full = model.score_all(users)
        direct = model.scores(users, torch.arange(N_ITEMS).expand(N_USERS, -1))
    assert full.shape == (N_USERS, N_ITEMS)
    _close(full, direct, f"{name} score_all")


def test_fused_splits_a_few_long_rows_across_targets(monkeypatch):
    # one user with many targets (a 512-instance batch, or score_all for one user): the fused
    # path cuts the row's targets into slices; values and gradients must not change
    monkeypatch.setattr(attentive, "SMALL_WORK", 0)  # tiny data: force the multi-thread plan
    monkeypatch.setenv("MMIRIS_KERNEL_THREADS", "2")
    history, _, _, feats = tiny_data(seed=9)
    users = torch.tensor([6, 1])  # 37 history items, and a single one
    items = torch.randint(0, N_ITEMS, (2, 150))
    items[1, :3] = int(history.items_of(1)[0])
    for name in ["nais_prod", "multimodal_iris"]:
        model = make(name, history, feats)
        out = {}
        for backend in ["eager", "fused"]:
            model.backend = backend
            out[backend] = _grads(model, lambda m=model: m.scores(users, items))
        _close(out["fused"][0], out["eager"][0], f"{name} split scores")
        for n in out["eager"][1]:
            _close(out["fused"][1][n], out["eager"][1][n], f"{name} split d/d{n}")


def test_fused_plan_really_slices_few_rows(monkeypatch):
    calls = []
    real = attentive._FusedAttentiveSum.apply
    monkeypatch.setattr(attentive._FusedAttentiveSum, "apply", lambda *a: calls.append(a[5].shape) or real(*a))
    monkeypatch.setattr(attentive, "SMALL_WORK", 0)
    monkeypatch.setenv("MMIRIS_KERNEL_THREADS", "2")
    history, _, _, feats = tiny_data()
    model = make("nais_concat", history, feats)
    model.scores(torch.tensor([6]), torch.randint(0, N_ITEMS, (1, 150)))
    assert calls and calls[0][0] > 1  # one user became several rows of target slices
