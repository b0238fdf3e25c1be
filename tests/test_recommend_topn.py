"""Batch top-N with explanations against a slow, obviously correct per-user reference."""

import numpy as np
import pytest
import torch

from mmiris.artifacts.schema import load_contract, validate
from mmiris.data.split import SplitData, UserHistory
from mmiris.errors import MmirisError
from mmiris.models.base import ModelConfig, Recommender
from mmiris.pipelines.recommend import recommend_output
from mmiris.recommend.explain import explain
from mmiris.recommend.topn import consumed_history, recommend_top_n


class TinyAttention(Recommender):
    """A NAIS-shaped model small enough to check by hand: a_ij ∝ exp(w·(p_i ⊙ q_j))."""

    name = "tiny_attention"
    has_attention = True

    def __init__(self, n_users, n_items, history, seed=0, beta=0.8):
        super().__init__(ModelConfig(emb=4), n_users, n_items, history)
        g = torch.Generator().manual_seed(seed)
        self.P = torch.nn.Parameter(torch.randn(n_items, 4, generator=g))
        self.Q = torch.nn.Parameter(torch.randn(n_items, 4, generator=g))
        self.w = torch.nn.Parameter(torch.randn(4, generator=g))
        self.beta = beta

    def _parts(self, users, items):
        hist, mask = self.history.padded(users)
        mask = mask[:, None, :] & (hist[:, None, :] != items[:, :, None])  # R_u⁺ \ {j}
        e = torch.einsum("blk,btk,k->btl", self.P[hist], self.Q[items], self.w)
        ex = torch.exp(e) * mask  # no max shift: with β ≠ 1 it would change a_ij
        a = ex / ex.sum(-1, keepdim=True).clamp_min(1e-30) ** self.beta
        return hist, a, mask

    def scores(self, users, items):
        hist, a, _ = self._parts(users, items)
        pooled = torch.einsum("btl,blk->btk", a, self.P[hist])
        return (pooled * self.Q[items]).sum(-1)

    def attention(self, users, items):
        hist, a, mask = self._parts(users, items)
        return hist, a, mask.any(1)


class TinyMF(Recommender):
    name = "tiny_mf"

    def __init__(self, n_users, n_items):
        super().__init__(ModelConfig(emb=3), n_users, n_items)
        g = torch.Generator().manual_seed(1)
        self.U = torch.nn.Parameter(torch.randn(n_users, 3, generator=g))
        self.V = torch.nn.Parameter(torch.randn(n_items, 3, generator=g))

    def scores(self, users, items):
        return (self.U[users][:, None, :] * self.V[items]).sum(-1)


def make_split(n_users=12, n_items=30, seed=0):
    rng = np.random.default_rng(seed)
    tu, ti, held = [], [], {}
    for u in range(n_users):
        items = rng.choice(n_items, size=int(rng.integers(4, 12)), replace=False)
        held[u] = items[:2]
        tu += [u] * (len(items) - 2)
        ti += items[2:].tolist()
    users = np.arange(n_users)
    negs = np.zeros((n_users, 0), dtype=np.int64)
    return SplitData(
        None,
        n_users,
        n_items,
        np.array(tu),
        np.array(ti),
        users,
        np.array([held[u][0] for u in users]),
        negs,
        users,
        np.array([held[u][1] for u in users]),
        negs,
    )


def all_consumed(split):
    return consumed_history(
        split.n_users,
        split.n_items,
        (split.train_users, split.train_items),
        (split.valid_users, split.valid_items),
        (split.test_users, split.test_items),
    )


def test_top_n_and_explanations_match_a_per_user_reference():
    split = make_split()
    model = TinyAttention(split.n_users, split.n_items, split.history())
    consumed = all_consumed(split)
    recs = recommend_top_n(model, consumed, top_n=5, explain_k=3, batch_users=5)
    with torch.no_grad():
        for row, u in enumerate(recs.users):
            seen = set(consumed.items_of(u).tolist())
            cands = [j for j in range(split.n_items) if j not in seen]
            s = {j: torch.sigmoid(model.scores(torch.tensor([u]), torch.tensor([[j]])))[0, 0].item() for j in cands}
            ref = sorted(cands, key=lambda j: -s[j])[:5]
            assert recs.items[row].tolist() == ref
            np.testing.assert_allclose(recs.scores[row], [s[j] for j in ref], rtol=1e-5)
            hist = split.history().items_of(u)
            for t, j in enumerate(ref):
                # relevance of each history item, one pair at a time
                e = {i: float(model.w @ (model.P[i] * model.Q[j])) for i in hist}
                top = sorted(hist, key=lambda i: -e[i])[:3]
                n = len(top)
                assert recs.explain_items[row, t].tolist() == top + [-1] * (3 - n)
                z = sum(np.exp(v) for v in e.values())
                expected = [np.exp(e[i]) / z**0.8 for i in top]
                np.testing.assert_allclose(recs.explain_relevance[row, t, :n], expected, rtol=1e-4)


def test_consumed_items_are_never_recommended_and_scores_are_probabilities():
    split = make_split(seed=2)
    model = TinyAttention(split.n_users, split.n_items, split.history(), seed=3)
    consumed = all_consumed(split)
    recs = recommend_top_n(model, consumed, top_n=10, explain_k=2)
    for row, u in enumerate(recs.users):
        assert not set(recs.items[row].tolist()) & set(consumed.items_of(u).tolist())
        assert len(set(recs.items[row].tolist())) == 10
        assert np.all(np.diff(recs.scores[row]) <= 1e-7)
        # explanations come from the user's training history only
        assert set(recs.explain_items[row].ravel().tolist()) <= set(split.history().items_of(u).tolist())
    assert np.all((recs.scores > 0) & (recs.scores < 1))


def test_table_matches_the_contract_and_models_without_attention_get_null_explanations():
    split = make_split()
    out = recommend_output(TinyMF(split.n_users, split.n_items), split, top_n=4, explain_k=3, users=[0, 5])
    t = out.tables["recommendations"]
    validate(t, load_contract("recommendations"), "recommendations", where="test")
    assert t.num_rows == 8 and t.column("explanations").null_count == 8
    assert t.column("user_id").to_pylist() == [0] * 4 + [5] * 4
    assert t.column("rank").to_pylist() == [1, 2, 3, 4] * 2
    assert out.stats["explained"] is False

    out = recommend_output(TinyAttention(split.n_users, split.n_items, split.history()), split, top_n=4, explain_k=3)
    t = out.tables["recommendations"]
    validate(t, load_contract("recommendations"), "recommendations", where="test")
    ex = t.column("explanations").to_pylist()
    assert all(1 <= len(e) <= 3 for e in ex)
    assert all(e[0]["relevance"] >= e[-1]["relevance"] for e in ex)


def test_fewer_unseen_items_than_n_and_short_histories():
    # user 0 has consumed all but 2 of 6 items; user 1 has a history of 1 item
    hist = UserHistory.from_pairs(np.array([0, 0, 0, 1]), np.array([0, 1, 2, 3]), 2, 6)
    consumed = UserHistory.from_pairs(np.array([0, 0, 0, 0, 1]), np.array([0, 1, 2, 3, 3]), 2, 6)
    model = TinyAttention(2, 6, hist)
    recs = recommend_top_n(model, consumed, top_n=4, explain_k=3)
    row0 = recs.items[list(recs.users).index(0)]
    assert sorted(row0[:2].tolist()) == [4, 5] and row0[2:].tolist() == [-1, -1]
    table = recs.to_table()
    assert table.num_rows == 2 + 4
    ex1 = [e for u, e in zip(table.column("user_id").to_pylist(), table.column("explanations").to_pylist()) if u == 1]
    assert all(len(e) == 1 and e[0]["item_id"] == 3 for e in ex1)


def test_explain_pads_when_history_is_shorter_than_k():
    hist = UserHistory.from_pairs(np.array([0, 0]), np.array([1, 2]), 1, 5)
    model = TinyAttention(1, 5, hist)
    ids, rel = explain(model, torch.tensor([0]), torch.tensor([[3, 4]]), 4)
    assert ids.shape == (1, 2, 4) and ids[0, :, 2:].eq(-1).all() and torch.isnan(rel[0, :, 2:]).all()
    assert set(ids[0, 0, :2].tolist()) == {1, 2}


def test_bad_users_and_mismatched_model_are_clear_errors():
    split = make_split()
    with pytest.raises(MmirisError, match="user 99"):
        recommend_output(TinyMF(split.n_users, split.n_items), split, top_n=3, explain_k=0, users=[99])
    with pytest.raises(MmirisError, match="do not belong together"):
        recommend_output(TinyMF(split.n_users + 1, split.n_items), split, top_n=3, explain_k=0)


def test_cli_user_lists_parse_or_fail_clearly():
    from mmiris.cli.recommend import parse_users

    assert parse_users("1, 2,3") == [1, 2, 3] and parse_users(None) is None
    with pytest.raises(MmirisError, match="comma-separated integer"):
        parse_users("1;2")
