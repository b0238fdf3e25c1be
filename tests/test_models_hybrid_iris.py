"""Hybrid IRIS against a loop over its equations (mmiris/models/hybrid_iris.py docstring):
values and gradients on both attention backends, missing modalities, empty histories,
explanations, and the content part that lets it score items with no interactions."""

import math

import numpy as np
import pytest
import torch
from test_models_reference import N_ITEMS, H, _close, _grads, make, ref_towers, tiny_data

CFGS = {
    "full": {},
    "alpha": {"alpha": 0.5, "beta": 1.0},
    "no_collab": {"collaborative_attention": False},
    "no_content": {"content_embeddings": False},
    "no_similarity": {"content_similarity": 0},
    "metric": {"content_metric": True, "metric_dropout": 0.0},  # dropout: its own test below
}


def _model(history, feats, **cfg):
    cfg.setdefault("content_dropout", 0.0)  # content dropout has its own reference test below
    return make("hybrid_iris", history, feats, image_hidden=6, attention_size=H, **cfg)


def ref_parts(model):
    """p(i), q(j, dropped) and the attention logit(i, j, dropped) of the docstring's equations;
    ``dropped``: content dropout took the target's free Q_j away (q_j = U_q g_j)."""
    g = {i: torch.cat([ref_towers(model, i)[m] for m in model.modalities]) for i in range(N_ITEMS)}

    def p(i):
        return model.P.weight[i] + (model.content_p.weight @ g[i] if model.content_p is not None else 0.0)

    def q(j, dropped=False):
        free = torch.zeros_like(model.Q.weight[j]) if dropped else model.Q.weight[j]
        return free + (model.content_q.weight @ g[j] if model.content_q is not None else 0.0)

    def logit(i, j, dropped=False):
        k = model.config.emb
        x = model.irn_bias.clone()
        for n, m in enumerate(model.modalities):  # eq. 6 on the towers of eq. 7–8
            x = (
                x
                + model.irn_hist[m].weight @ g[i][n * k : (n + 1) * k]
                + model.irn_target[m].weight @ g[j][n * k : (n + 1) * k]
            )
        if model.irn_p is not None:  # NAIS_concat's W[p_i; q_j] on the hybrid embeddings
            x = x + model.irn_p.weight @ p(i) + model.irn_q.weight @ q(j, dropped)
        return torch.dot(model.h.weight[0], torch.relu(x))

    return p, q, logit, ref_similarity(model)


def ref_content_vectors(model):
    """Content-kNN vectors by a loop: per modality the mean over the items that have it,
    subtracted, unit length, zero where missing, each modality weighted 1/√2."""
    out = []
    for i in range(N_ITEMS):
        blocks = []
        for m in model.modalities:
            f = model.features[m]
            have = [n for n in range(N_ITEMS) if bool(f.present[n])]
            if not bool(f.present[i]):
                blocks.append(torch.zeros(f.features.shape[1]))
                continue
            mean = sum(f.features[n].float() for n in have) / len(have)
            x = f.features[i].float() - mean
            blocks.append(x / x.norm() * 2**-0.5)
        out.append(torch.cat(blocks))
    return out


def ref_similarity(model, keep_p=None, keep_q=None):
    """γ c_i·c_j (the tiny catalogue has fewer content dimensions than ``content_similarity``
    directions, so the projected ĉ_i·ĉ_j is exactly c_i·c_j); with ``content_metric``
    γ (c_i M_p)·(c_j M_q), the projections' rows (content dimensions) kept where ``keep_p``,
    ``keep_q`` say and scaled by 1/(share kept); 0 without the term."""
    if not model.config.content_similarity:
        return lambda i, j: 0.0
    c = ref_content_vectors(model)
    if model.config.content_metric:
        D = len(c[0])
        drop = model.config.metric_dropout

        def projected(M, keep, x):
            keep = torch.ones(D, dtype=torch.bool) if keep is None else keep
            return sum(x[n] * M[n] / (1 - drop) for n in range(D) if keep[n])

        return lambda i, j: (
            model.sim_scale
            * torch.dot(projected(model.metric_p, keep_p, c[i]), projected(model.metric_q, keep_q, c[j]))
        )
    return lambda i, j: model.sim_scale * torch.dot(c[i], c[j])


def ref_score(model, history, u, j, parts, dropped=False):
    """r̂_uj; a dropped pair also loses b_j."""
    p, q, logit, sim = parts
    c = model.config
    hist = [int(i) for i in history.items_of(u) if int(i) != j]
    s = torch.zeros(())
    if hist:
        es = [logit(i, j, dropped) for i in hist]
        denom = sum(torch.exp(e) for e in es) ** c.beta
        s = sum(torch.exp(e) / denom * (torch.dot(p(i), q(j, dropped)) + sim(i, j)) for i, e in zip(hist, es))
        s = s * len(hist) ** (-c.alpha)
    return s + (0.0 if dropped else model.item_bias[j])


@pytest.mark.parametrize("all_missing", [False, True], ids=["features", "all_features_missing"])
@pytest.mark.parametrize("case", sorted(CFGS))
def test_hybrid_equals_reference(case, all_missing):
    history, users, targets, feats = tiny_data(all_missing=all_missing)
    model = _model(history, feats, **CFGS[case])

    def reference():
        parts = ref_parts(model)
        return torch.stack(
            [
                torch.stack([ref_score(model, history, int(u), int(j), parts) for j in targets[b]])
                for b, u in enumerate(users)
            ]
        )

    ref, ref_g = _grads(model, reference)
    for backend in ["eager", "fused"]:
        model.backend = backend
        got, got_g = _grads(model, lambda: model.scores(users, targets))
        _close(got, ref, f"{case}/{backend} scores")
        for n in ref_g:
            _close(got_g[n], ref_g[n], f"{case}/{backend} d/d{n}")


def test_attention_weights_and_score_all_match():
    history, users, targets, feats = tiny_data(seed=3)
    model = _model(history, feats)
    _, _, logit, _ = ref_parts(model)
    hist, a, mask = model.attention(users, targets)
    with torch.no_grad():
        for b, u in enumerate(users.tolist()):
            own = [int(i) for i in history.items_of(u)]
            for t, j in enumerate(targets[b].tolist()):
                keep = [i for i in own if i != j]
                es = {i: logit(i, j) for i in keep}
                denom = sum(torch.exp(e) for e in es.values()) ** model.config.beta if keep else 1.0
                for l, i in enumerate(own):
                    want = float(torch.exp(es[i]) / denom) if i in es else 0.0
                    assert math.isclose(float(a[b, t, l]), want, rel_tol=1e-4, abs_tol=1e-6)
        model.score_chunk_items = 7
        full = model.score_all(users)
        direct = model.scores(users, torch.arange(N_ITEMS).expand(len(users), -1))
    _close(full, direct, "hybrid score_all")


def test_empty_history_scores_the_bias_with_finite_gradients():
    history, _, _, feats = tiny_data()
    model = _model(history, feats)
    only = int(history.items_of(1)[0])
    users, items = torch.tensor([1, 0]), torch.tensor([[only, only], [only, 5]])
    for backend in ["eager", "fused"]:
        model.backend = backend
        model.zero_grad()
        s = model.scores(users, items)
        s.sum().backward()
        assert torch.allclose(s.detach(), model.item_bias[items].detach())
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_a_cold_item_is_scored_through_its_content():
    """An item whose P, Q rows and bias are zero (never trained) still gets a score from its
    features through either content path (U_q g_j, or the similarity term), unlike NAIS; with
    both switched off it gets exactly zero."""
    history, users, _, feats = tiny_data(seed=4)
    cold = next(j for j in range(N_ITEMS) if bool(feats["image"].present[j]) and bool(feats["text"].present[j]))
    cases = {
        "full": {},
        "embeddings_only": {"content_similarity": 0},
        "similarity_only": {"content_embeddings": False},
        "neither": {"content_embeddings": False, "content_similarity": 0},
    }
    scores = {}
    for case, cfg in cases.items():
        model = _model(history, feats, **cfg)
        with torch.no_grad():
            model.Q.weight[cold] = 0.0
            model.item_bias[cold] = 0.0
            scores[case] = model.scores(users[4:6], torch.tensor([[cold], [cold]]))
    assert torch.all(scores["neither"] == 0)
    for case in ("full", "embeddings_only", "similarity_only"):
        assert torch.all(scores[case].abs() > 0), case


def test_content_maps_start_at_zero_so_fism_init_is_exact():
    history, _, _, feats = tiny_data()
    from mmiris.models.build import build_model

    fism = build_model("fism", {"emb": 8}, 8, N_ITEMS, history)
    model = build_model("hybrid_iris", {"emb": 8, "image_hidden": 6}, 8, N_ITEMS, history, feats)
    model.init_from(fism)
    assert not model.content_p.weight.detach().any() and not model.content_q.weight.detach().any()
    PH, QT, _ = model._parts(torch.tensor([[1, 2]]), torch.tensor([[3]]))
    k = 8  # after p and q come γ ĉ_i and ĉ_j, the similarity term's own vectors
    _close(PH[0, :, :k], fism.P.weight[[1, 2]], "p = FISM's P at init")
    _close(QT[0, :, :k], fism.Q.weight[[3]], "q = FISM's Q at init")
    assert PH.shape[-1] == QT.shape[-1] == k + model.config.content_similarity


@pytest.mark.parametrize("case", ["full", "no_collab"])
def test_content_dropout_equals_reference_in_training_only(case):
    """Training with ``content_dropout``: each (user, target) pair drawn as dropped is scored
    with Q_j and b_j removed (q_j = U_q g_j), values and gradients as the loop says, on both
    backends; evaluation (no gradients, or eval mode) never drops."""
    history, users, targets, feats = tiny_data(seed=5)
    model = _model(history, feats, content_dropout=0.5, **CFGS[case])
    torch.manual_seed(11)
    dropped = torch.rand(targets.shape) < 0.5
    assert dropped.any() and not dropped.all()

    def reference():
        parts = ref_parts(model)
        return torch.stack(
            [
                torch.stack(
                    [
                        ref_score(model, history, int(u), int(j), parts, bool(dropped[b, t]))
                        for t, j in enumerate(targets[b])
                    ]
                )
                for b, u in enumerate(users)
            ]
        )

    ref, ref_g = _grads(model, reference)
    for backend in ["eager", "fused"]:
        model.backend = backend
        torch.manual_seed(11)  # the model draws the same pairs
        got, got_g = _grads(model, lambda: model.scores(users, targets))
        _close(got, ref, f"dropout/{case}/{backend} scores")
        for n in ref_g:  # fp32 sums over 40-item histories: absolute tolerance scaled to the gradient
            g, r = got_g[n], ref_g[n]
            assert torch.allclose(g, r, rtol=1e-4, atol=1e-5 * max(1.0, float(r.abs().max()))), (
                f"dropout/{case}/{backend} d/d{n}: max diff {(g - r).abs().max():.3g} of {r.abs().max():.3g}"
            )

    undropped = torch.stack(
        [
            torch.stack([ref_score(model, history, int(u), int(j), ref_parts(model)) for j in targets[b]])
            for b, u in enumerate(users)
        ]
    ).detach()
    with torch.no_grad():
        _close(model.scores(users, targets), undropped, "no dropout without gradients")
    model.eval()
    _close(model.scores(users, targets).detach(), undropped, "no dropout in eval mode")


def test_metric_dropout_drops_content_dimensions_in_training_only():
    """Training with ``metric_dropout``: one mask of content dimensions per side and batch
    (drawn history side first), the kept rows of M_p and M_q scaled by 1/(1 − share): values
    and gradients as the loop says, on both backends; without gradients nothing is dropped."""
    history, users, targets, feats = tiny_data(seed=8)
    model = _model(history, feats, content_metric=True, metric_dropout=0.4)
    D = model.metric_p.shape[0]
    torch.manual_seed(13)
    keep_p, keep_q = torch.rand(D) >= 0.4, torch.rand(D) >= 0.4
    assert not torch.equal(keep_p, keep_q) and keep_p.any() and not keep_p.all()

    def reference(keep_p=None, keep_q=None):
        p, q, logit, _ = ref_parts(model)
        parts = (p, q, logit, ref_similarity(model, keep_p, keep_q))
        return torch.stack(
            [
                torch.stack([ref_score(model, history, int(u), int(j), parts) for j in targets[b]])
                for b, u in enumerate(users)
            ]
        )

    ref, ref_g = _grads(model, lambda: reference(keep_p, keep_q))
    assert {"metric_p", "metric_q"} <= set(ref_g)
    for backend in ["eager", "fused"]:
        model.backend = backend
        torch.manual_seed(13)  # the model draws the same masks
        got, got_g = _grads(model, lambda: model.scores(users, targets))
        _close(got, ref, f"metric dropout/{backend} scores")
        for n in ref_g:
            g, r = got_g[n], ref_g[n]
            assert torch.allclose(g, r, rtol=1e-4, atol=1e-5 * max(1.0, float(r.abs().max()))), (
                f"metric dropout/{backend} d/d{n}: max diff {(g - r).abs().max():.3g} of {r.abs().max():.3g}"
            )
    with torch.no_grad():  # kept rows scaled by 1/(1 − share) in ref_similarity: all kept here
        model.config.metric_dropout = 0.0
        undropped = reference()
        model.config.metric_dropout = 0.4
        _close(model.scores(users, targets), undropped, "no metric dropout without gradients")


def test_metric_dropout_per_item_gives_each_item_its_own_masks():
    """``metric_dropout_per="item"``: each row (item) gets its own mask of content dimensions per
    side (history side drawn first), kept dimensions scaled by 1/(1 − share), as a formula over
    the content rows says; gradients reach both projections; nothing dropped without gradients
    or in eval mode, and an unknown unit is refused."""
    from mmiris.models.build import build_model

    history, users, targets, feats = tiny_data(seed=10)
    model = _model(history, feats, content_metric=True, metric_dropout=0.4, metric_dropout_per="item")
    with torch.no_grad():
        model.metric_p.normal_(), model.metric_q.normal_()
    ids = torch.tensor([0, 3, 5, 5])
    torch.manual_seed(21)
    got = model.content_similarity_vectors(ids)
    with torch.no_grad():
        model.config.metric_dropout = 0.0
        plain = model.content_similarity_vectors(ids)  # undropped: c M_p, c M_q
        model.config.metric_dropout = 0.4
    c = torch.stack([ref_content_vectors(model)[int(i)] for i in ids])
    torch.manual_seed(21)
    kp, kq = torch.rand(c.shape) >= 0.4, torch.rand(c.shape) >= 0.4
    assert not torch.equal(kp[1], kp[2]) and not torch.equal(kp[2], kp[3])  # per item, even one item twice
    want = torch.cat([(c * kp / 0.6) @ model.metric_p, (c * kq / 0.6) @ model.metric_q], dim=1)
    _close(got.detach(), want.detach(), "per-item metric dropout")
    got.sum().backward()
    assert model.metric_p.grad.abs().sum() > 0 and model.metric_q.grad.abs().sum() > 0
    with torch.no_grad():
        _close(model.content_similarity_vectors(ids), plain, "no metric dropout without gradients")
    model.eval()
    _close(model.content_similarity_vectors(ids).detach(), plain, "no metric dropout in eval mode")
    cfg = {"emb": 8, "image_hidden": 6, "content_metric": True, "metric_dropout_per": "user"}
    with pytest.raises(ValueError, match="metric_dropout_per"):
        build_model("hybrid_iris", cfg, history.n_users, N_ITEMS, history, feats)


def test_metric_heads_average_at_inference_and_train_one_head_per_batch():
    """``metric_heads=2``: outside training the similarity term is the mean of the heads',
    γ ½ Σ_k (c_i M_p^k)·(c_j M_q^k), so a two-head model scores exactly as the mean of two
    one-head models that hold one head each (everything else equal), through the model and
    through the new-item path; in training each batch uses one head, drawn first, and only
    that head gets a gradient; the heads start at the principal directions."""
    from mmiris.models.build import build_model

    history, users, targets, feats = tiny_data(seed=11)
    cfg = {"emb": 8, "image_hidden": 6, "content_dropout": 0.0, "content_metric": True, "metric_dropout": 0.0}
    torch.manual_seed(5)
    two = build_model("hybrid_iris", {**cfg, "metric_heads": 2}, history.n_users, N_ITEMS, history, feats)
    assert torch.equal(two.metric_heads_p[0], two.content_basis) and torch.equal(two.metric_heads_q[0], two.metric_q)
    with torch.no_grad():
        for prm in two.parameters():
            prm.normal_(0.0, 0.3)
    singles = []
    for k in range(2):
        one = build_model("hybrid_iris", cfg, history.n_users, N_ITEMS, history, feats)
        state = {n: v for n, v in two.state_dict().items() if not n.startswith("metric_heads")}
        if k:
            state["metric_p"], state["metric_q"] = two.metric_heads_p[0].detach(), two.metric_heads_q[0].detach()
        one.load_state_dict(state)
        singles.append(one.eval())
    two.eval()
    with torch.no_grad():
        _close(
            two.scores(users, targets),
            (singles[0].scores(users, targets) + singles[1].scores(users, targets)) / 2,
            "two heads: the mean of the one-head models",
        )
        hist, hlen = two.history_of(users)
        _close(
            two.similarity_path(hist, hlen, targets),
            (singles[0].similarity_path(hist, hlen, targets) + singles[1].similarity_path(hist, hlen, targets)) / 2,
            "two heads: the new-item path",
        )
    two.train()
    torch.manual_seed(17)
    drawn = int(torch.randint(2, ()))
    torch.manual_seed(17)
    two.zero_grad()
    two.scores(users, targets).sum().backward()
    extra = two.metric_heads_p.grad
    head_grads = [two.metric_p.grad, None if extra is None else extra[0]]  # None: no gradient reached it
    size = [0.0 if g is None else float(g.abs().sum()) for g in head_grads]
    assert size[drawn] > 0 and size[1 - drawn] == 0
    with pytest.raises(ValueError, match="metric_heads"):
        build_model("hybrid_iris", {**cfg, "metric_heads": 0}, history.n_users, N_ITEMS, history, feats)


def test_the_learned_metric_starts_at_the_fixed_similarity():
    """Built (not randomised), M_p = M_q = the principal directions, so a model with
    ``content_metric`` scores exactly as the one with the fixed term; it needs the term and a
    dropout share in [0, 1)."""
    from mmiris.models.build import build_model

    history, users, targets, feats = tiny_data(seed=9)
    cfg = {"emb": 8, "image_hidden": 6, "content_dropout": 0.0}
    torch.manual_seed(3)
    fixed = build_model("hybrid_iris", cfg, history.n_users, N_ITEMS, history, feats)
    torch.manual_seed(3)
    learned = build_model("hybrid_iris", {**cfg, "content_metric": True}, history.n_users, N_ITEMS, history, feats)
    assert torch.equal(learned.metric_p, learned.content_basis) and torch.equal(learned.metric_q, learned.content_basis)
    with torch.no_grad():
        for p in (fixed.content_p, fixed.content_q, learned.content_p, learned.content_q):
            p.weight.normal_(0.0, 0.3)  # a content part, so the sum is not the similarity alone
        learned.content_p.weight.copy_(fixed.content_p.weight)
        learned.content_q.weight.copy_(fixed.content_q.weight)
        fixed.eval(), learned.eval()
        _close(learned.scores(users, targets), fixed.scores(users, targets), "learned metric at its start")
    with pytest.raises(ValueError, match="content_similarity"):
        build_model("hybrid_iris", {**cfg, "content_metric": True, "content_similarity": 0}, 3, N_ITEMS, history, feats)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="metric_dropout"):
            build_model(
                "hybrid_iris", {**cfg, "content_metric": True, "metric_dropout": bad}, 3, N_ITEMS, history, feats
            )


def test_content_dropout_must_be_a_probability():
    history, _, _, feats = tiny_data()
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="content_dropout"):
            _model(history, feats, content_dropout=bad)


def test_items_without_training_interactions_have_zero_free_rows():
    """P_j, Q_j and b_j of an item no training history holds are zero when the model is built
    and after FISM init, so such an item is scored through its content alone."""
    from mmiris.data.split import UserHistory
    from mmiris.models.build import build_model

    history, _, _, feats = tiny_data()
    seen = set(history.indices.tolist())
    cold = [j for j in range(N_ITEMS) if j not in seen]
    if not cold:  # hold one item out of the tiny histories
        drop = int(history.indices[0])
        keep = history.indices != drop
        users = np.repeat(np.arange(history.n_users), history.lengths())[keep]
        history = UserHistory.from_pairs(users, history.indices[keep], history.n_users, N_ITEMS)
        cold = [drop]
    fism = build_model("fism", {"emb": 8}, history.n_users, N_ITEMS, history)
    with torch.no_grad():
        fism.item_bias.fill_(0.25)
    model = build_model("hybrid_iris", {"emb": 8, "image_hidden": 6}, history.n_users, N_ITEMS, history, feats)
    for stage in ("built", "init_from"):
        if stage == "init_from":
            model.init_from(fism)
        for j in cold:
            assert not model.P.weight[j].any() and not model.Q.weight[j].any(), stage
            assert float(model.item_bias[j].detach()) == 0.0, stage
        warm = next(j for j in range(N_ITEMS) if j in seen and j not in cold)
        assert model.Q.weight[warm].any(), stage
    assert float(model.item_bias[warm].detach()) == 0.25


def test_similarity_directions_fewer_than_the_content_dimensions():
    """With fewer directions than the content vectors have, ĉ_i·ĉ_j is c_i·c_j projected on
    their leading principal directions (a numpy SVD here); the means and directions are saved
    with the model, so a model rebuilt over other features and loaded projects alike."""
    history, users, targets, feats = tiny_data(seed=6)
    model = _model(history, feats, content_similarity=4)
    C = torch.stack(ref_content_vectors(model)).double().numpy()
    _, _, vt = np.linalg.svd(C, full_matrices=False)
    want = C @ vt[:4].T @ vt[:4] @ C.T
    chat = model.content_similarity_vectors(torch.arange(N_ITEMS)).double()
    assert np.allclose((chat @ chat.T).numpy(), want, atol=1e-5)
    assert {"image_content_mean", "text_content_mean", "content_basis"} <= set(model.state_dict())

    _, _, _, other = tiny_data(seed=7)  # other features: other means and directions when built
    rebuilt = _model(history, other, content_similarity=4)
    rebuilt.load_state_dict(model.state_dict())
    for m in model.modalities:
        getattr(rebuilt, f"{m}_features").copy_(getattr(model, f"{m}_features"))
        getattr(rebuilt, f"{m}_present").copy_(getattr(model, f"{m}_present"))
    with torch.no_grad():
        _close(rebuilt.scores(users, targets), model.scores(users, targets), "loaded means and directions")


@pytest.mark.parametrize("case", ["full", "no_similarity"])
def test_targets_as_new_scores_every_candidate_as_a_dropped_pair(case):
    """``targets_as_new`` (cold model selection): every (user, target) pair is scored as the
    loop scores a dropped pair (Q_j and b_j gone, P_i of the history kept), on both backends
    and through score_all; the free rows come back bit for bit, also after an error."""
    from mmiris.models.base import targets_as_new

    history, users, targets, feats = tiny_data(seed=7)
    model = _model(history, feats, **CFGS[case]).eval()
    parts = ref_parts(model)
    ref = torch.stack(
        [
            torch.stack([ref_score(model, history, int(u), int(j), parts, dropped=True) for j in targets[b]])
            for b, u in enumerate(users)
        ]
    ).detach()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    warm = model.scores(users, targets).detach()
    assert not torch.allclose(warm, ref)  # the free rows matter: the check below can fail
    for backend in ["eager", "fused"]:
        model.backend = backend
        with torch.no_grad(), targets_as_new(model):
            _close(model.scores(users, targets), ref, f"as new/{case}/{backend}")
            every = model.score_all(users)
        _close(every.gather(1, targets), ref, f"as new/{case}/{backend} score_all")
    with pytest.raises(RuntimeError, match="inside"), targets_as_new(model):
        raise RuntimeError("inside")
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
    _close(model.scores(users, targets).detach(), warm, "restored")


# -- new items through the similarity term (new_items="similarity") ---------------------------
METRIC = {"content_metric": True, "metric_dropout": 0.0}  # the loop's projections: no dropout share
PATH_CFGS = {"fixed": {}, "metric": METRIC, "alpha": {**METRIC, "alpha": 0.5, "beta": 1.0}}


def ref_path_score(model, history, u, j, sim):
    """γ n^-(α+β) Σ_{i ∈ R_u⁺\\{j}} ĉ_i·ĉ_j by a loop (``sim`` includes γ); 0 on an empty history."""
    c = model.config
    hist = [int(i) for i in history.items_of(u) if int(i) != j]
    if not hist:
        return torch.zeros(())
    return sum(sim(i, j) for i in hist) * len(hist) ** -(c.alpha + c.beta)


def _path_model(history, feats, cold, **cfg):
    """A model ranking new items by the similarity path, with ``cold`` items' free rows zero."""
    model = _model(history, feats, new_items="similarity", **cfg)
    with torch.no_grad():
        model.Q.weight[cold] = 0.0
        model.item_bias[cold] = 0.0
    return model.eval()


@pytest.mark.parametrize("case", sorted(PATH_CFGS))
def test_new_items_by_similarity_equals_reference(case):
    """Targets with no learned row are scored by the loop's similarity path, the others exactly as
    the model scores them; through scores and score_all, on both backends, inside cached_items,
    including a cold target that is in the user's own history (excluded from R_u⁺)."""
    history, users, targets, feats = tiny_data(seed=5)
    cold = [int(targets[0, 0]), int(targets[1, 3]), int(targets[2, 4])]  # targets[0, 0] is in u0's history
    model = _path_model(history, feats, cold, **PATH_CFGS[case])
    parts = ref_parts(model)
    with torch.no_grad():
        ref = torch.stack(
            [
                torch.stack(
                    [
                        ref_path_score(model, history, int(u), int(j), parts[3])
                        if int(j) in cold
                        else ref_score(model, history, int(u), int(j), parts)
                        for j in targets[b]
                    ]
                )
                for b, u in enumerate(users)
            ]
        )
        ref_all = torch.stack(
            [
                torch.stack(
                    [
                        ref_path_score(model, history, int(u), j, parts[3])
                        if j in cold
                        else ref_score(model, history, int(u), j, parts)
                        for j in range(N_ITEMS)
                    ]
                )
                for u in users
            ]
        )
        as_model = model.config.__class__(**{**model.config.to_dict(), "new_items": "model"})
        plain = type(model)(as_model, model.n_users, model.n_items, history, feats)
        plain.load_state_dict(model.state_dict())
        assert not torch.allclose(plain.eval().scores(users, targets), ref)  # the path changes scores
        for backend in ["eager", "fused"]:
            model.backend = backend
            _close(model.scores(users, targets), ref, f"{case}/{backend} scores")
            _close(model.score_all(users), ref_all, f"{case}/{backend} score_all")
            with model.cached_items():
                _close(model.scores(users, targets), ref, f"{case}/{backend} cached scores")


def test_the_similarity_path_is_off_in_training():
    """In training (with gradients) a cold target is scored by the model, as the loop does."""
    history, users, targets, feats = tiny_data(seed=5)
    cold = [int(targets[1, 3])]
    model = _path_model(history, feats, cold, **METRIC).train()
    parts = ref_parts(model)
    ref = ref_score(model, history, 1, cold[0], parts)
    got = model.scores(users[1:2], torch.tensor([[cold[0]]]))
    _close(got.detach()[0, 0], ref.detach(), "training score of a cold target")
    with torch.no_grad():
        path = ref_path_score(model, history, 1, cold[0], parts[3])
    assert not torch.isclose(ref.detach(), path, rtol=1e-3)


def test_targets_as_new_ranks_every_candidate_by_the_similarity_path():
    from mmiris.models.base import targets_as_new

    history, users, targets, feats = tiny_data(seed=6)
    model = _path_model(history, feats, [], **METRIC)
    sim = ref_parts(model)[3]
    with torch.no_grad():
        ref = torch.stack(
            [
                torch.stack([ref_path_score(model, history, int(u), int(j), sim) for j in targets[b]])
                for b, u in enumerate(users)
            ]
        )
        with targets_as_new(model):
            _close(model.scores(users, targets), ref, "as new scores")
            _close(model.score_all(users).gather(1, targets), ref, "as new score_all")
        assert not torch.allclose(model.scores(users, targets), ref)  # restored rows: the model again


def test_explanations_of_a_new_item_are_its_most_similar_history_items():
    """For a target the path ranks, the relevance of history item i is its share of the score,
    γ n^-(α+β) ĉ_i·ĉ_j (they sum to the score); the target itself is never an explanation."""
    from mmiris.recommend.explain import explain

    history, users, targets, feats = tiny_data(seed=5)
    u = 6  # 37 of the 40 items: a history longer than one kernel block, and items outside it
    own = [int(i) for i in history.items_of(u)]
    cold = [own[0], next(j for j in range(N_ITEMS) if j not in own)]
    model = _path_model(history, feats, cold, **METRIC)
    sim = ref_parts(model)[3]
    c = model.config
    hist, a, mask = model.attention(torch.tensor([u]), torch.tensor([cold]))
    for t, j in enumerate(cold):
        keep = [i for i in own if i != j]
        with torch.no_grad():
            want = {i: float(sim(i, j)) * len(keep) ** -(c.alpha + c.beta) for i in keep}
            score = float(model.scores(torch.tensor([u]), torch.tensor([[j]]))[0, 0])
        got = {int(i): float(a[0, t, l]) for l, i in enumerate(hist[0].tolist()) if bool(mask[0, l])}
        for i in keep:
            assert math.isclose(got[i], want[i], rel_tol=1e-4, abs_tol=1e-6), (j, i)
        assert math.isclose(sum(want.values()), score, rel_tol=1e-4, abs_tol=1e-6)
        ids, rel = explain(model, torch.tensor([u]), torch.tensor([[j]]), 3)
        best = sorted(keep, key=lambda i: -want[i])[:3]
        assert ids[0, 0].tolist() == best and j not in ids[0, 0].tolist()


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"new_items": "content"}, "new_items must be one of"),
        ({"new_items": "similarity", "content_similarity": 0}, "needs content_similarity"),
    ],
)
def test_new_items_setting_refusals(cfg, match):
    history, _, _, feats = tiny_data()
    with pytest.raises(ValueError, match=match):
        _model(history, feats, **cfg)


def test_reg_metric_pulls_the_projections_towards_the_principal_directions():
    """regularization() grows by λ Σ (M − B)² over both projections' entries (a loop), its
    gradient points back at B, and it is zero at the start; a negative λ is refused."""
    history, _, _, feats = tiny_data()
    lam = 0.3
    model = _model(history, feats, content_metric=True, reg_metric=lam)
    base = _model(history, feats, content_metric=True)
    base.load_state_dict(model.state_dict())
    B = model.content_basis
    with torch.no_grad():
        for M in (model.metric_p, model.metric_q):
            M.copy_(B)
    assert torch.isclose(model.regularization(), _regularization_without_pull(model, base))
    with torch.no_grad():
        model.metric_p.add_(torch.linspace(-1, 1, B.numel()).view_as(B))
        model.metric_q.mul_(1.5)
    want = lam * sum(
        float((M[r, c].detach() - B[r, c]) ** 2)
        for M in (model.metric_p, model.metric_q)
        for r in range(B.shape[0])
        for c in range(B.shape[1])
    )
    extra = model.regularization() - _regularization_without_pull(model, base)
    assert math.isclose(float(extra.detach()), want, rel_tol=1e-4)
    model.zero_grad()
    model.regularization().backward()
    torch.testing.assert_close(model.metric_q.grad, 2 * lam * (model.metric_q - B).detach(), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="reg_metric must be >= 0"):
        _model(history, feats, content_metric=True, reg_metric=-1.0)


def _regularization_without_pull(model, base):
    """The same parameters' regularization with reg_metric 0."""
    base.load_state_dict(model.state_dict())
    return base.regularization()


def test_metric_lr_puts_the_learned_projections_in_their_own_optimizer_group():
    """metric_lr ≠ 1: M_p and M_q form a group with that lr_scale and every other parameter
    the default group, each parameter exactly once; 1 (the default) keeps one group; a
    learning rate that is not positive is refused."""
    history, _, _, feats = tiny_data()
    model = _model(history, feats, content_metric=True, metric_lr=0.1)
    rest, metric = model.optimizer_groups()
    assert metric["lr_scale"] == 0.1 and "lr_scale" not in rest
    assert [id(p) for p in metric["params"]] == [id(model.metric_p), id(model.metric_q)]
    ids = [id(p) for g in (rest, metric) for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters()) and len(set(ids)) == len(ids)
    (one,) = _model(history, feats, content_metric=True).optimizer_groups()
    assert len(one["params"]) == len(list(model.parameters()))
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="metric_lr must be > 0"):
            _model(history, feats, content_metric=True, metric_lr=bad)
