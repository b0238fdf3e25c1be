"""HR@N / NDCG@N (eq. 13–14) and both protocols against slow, obviously correct references."""

import math

import numpy as np
import pytest
import torch

from mmiris.data.split import UserHistory
from mmiris.eval.metrics import metrics_from_ranks, positive_ranks
from mmiris.eval.protocols import full_ranks, sampled_ranks
from mmiris.models.base import ModelConfig, Recommender


class TableModel(Recommender):
    """Scores read from a fixed [n_users, n_items] table (lets tests choose ties)."""

    name = "table"

    def __init__(self, table: np.ndarray, history: UserHistory):
        super().__init__(ModelConfig(), table.shape[0], table.shape[1], history)
        self.register_buffer("table", torch.as_tensor(table, dtype=torch.float32))

    def scores(self, users, items):
        return self.table[users[:, None], items]


def slow_rank(pos_score, neg_scores):
    """Position of the positive in a list sorted by score, negatives first among equals."""
    ranked = sorted([(s, 0) for s in neg_scores] + [(pos_score, 1)], key=lambda x: (-x[0], x[1]))
    return [i for i, (_, is_pos) in enumerate(ranked) if is_pos][0]


def slow_metrics(ranks, ks=(5, 10, 20)):
    out = {}
    for k in ks:
        hits = [1.0 if r + 1 <= k else 0.0 for r in ranks]  # co(i), eq. 13
        gains = [1.0 / math.log2(r + 1 + 1) if r + 1 <= k else 0.0 for r in ranks]  # eq. 14, pos = r + 1
        out[f"hr{k}"] = sum(hits) / len(ranks)
        out[f"ndcg{k}"] = sum(gains) / len(ranks)
    return out


def test_ranks_and_metrics_match_slow_reference_with_pessimistic_ties():
    rng = np.random.default_rng(0)
    pos = rng.integers(0, 5, size=300).astype(np.float32)  # few distinct values: many ties
    neg = rng.integers(0, 5, size=(300, 30)).astype(np.float32)
    ranks = positive_ranks(torch.from_numpy(pos), torch.from_numpy(neg)).numpy()
    ref = [slow_rank(p, n) for p, n in zip(pos, neg)]
    assert ranks.tolist() == ref
    got, want = metrics_from_ranks(ranks), slow_metrics(ref)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-12)


def test_all_equal_scores_give_no_hits_and_nan_counts_against():
    pos = torch.zeros(4)
    neg = torch.zeros(4, 99)
    assert positive_ranks(pos, neg).tolist() == [99] * 4
    assert metrics_from_ranks(positive_ranks(pos, neg))["hr20"] == 0.0
    neg = torch.full((1, 3), -1.0)
    neg[0, 1] = float("nan")
    assert positive_ranks(torch.zeros(1), neg).tolist() == [1]
    assert positive_ranks(torch.tensor([float("nan")]), torch.zeros(1, 3)).tolist() == [3]


def test_perfect_and_known_positions():
    m = metrics_from_ranks(np.array([0, 1, 9, 10, 19, 50]))
    assert m["hr5"] == pytest.approx(2 / 6)
    assert m["hr10"] == pytest.approx(3 / 6)
    assert m["hr20"] == pytest.approx(5 / 6)
    assert m["ndcg10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(11)) / 6)


def _setup(n_users=37, n_items=23, seed=1):
    rng = np.random.default_rng(seed)
    table = rng.integers(0, 6, size=(n_users, n_items)).astype(np.float32)  # ties on purpose
    pairs = [(u, i) for u in range(n_users) for i in rng.choice(n_items, size=rng.integers(1, 8), replace=False)]
    hist = UserHistory.from_pairs(np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]), n_users, n_items)
    return rng, table, hist


def test_sampled_protocol_matches_slow_reference_and_collapses_duplicate_negatives():
    rng, table, hist = _setup()
    model = TableModel(table, hist)
    users = np.arange(table.shape[0])
    items = rng.integers(0, table.shape[1], size=len(users))
    negs = rng.integers(0, table.shape[1], size=(len(users), 12))
    negs[0, 3] = items[0]  # the test item among its own negatives (ML-1M has 156 such users)
    negs[1, 5] = negs[1, 2]  # a repeated negative
    res = sampled_ranks(model, users, items, negs, pair_budget=50)  # tiny budget: many batches
    ref = []
    dropped = 0
    for u, i, row in zip(users, items, negs):
        uniq = [n for n in dict.fromkeys(row.tolist()) if n != i]  # as NCF's dict of candidates
        dropped += len(row) - len(uniq)
        ref.append(slow_rank(table[u, i], [table[u, n] for n in uniq]))
    assert res.ranks.tolist() == ref
    assert res.dropped_negatives == dropped >= 2
    assert res.candidates[0] == 1 + len(set(negs[0].tolist()) - {items[0]})


def test_full_protocol_excludes_training_items_and_extra_but_keeps_the_positive():
    rng, table, hist = _setup()
    model = TableModel(table, hist)
    users = np.arange(table.shape[0])
    items = rng.integers(0, table.shape[1], size=len(users))
    items[0] = hist.items_of(0)[0]  # a held-out item that is also in training stays a candidate
    extra = rng.integers(-1, table.shape[1], size=len(users))
    res = full_ranks(model, users, items, hist, also_exclude=extra, batch_users=5)
    ref, counts = [], []
    for u, i, x in zip(users, items, extra):
        excluded = set(hist.items_of(u).tolist()) | ({int(x)} if x >= 0 else set())
        cands = [j for j in range(table.shape[1]) if j not in excluded and j != i]
        ref.append(slow_rank(table[u, i], [table[u, j] for j in cands]))
        counts.append(len(cands) + 1)
    assert res.ranks.tolist() == ref
    assert res.candidates.tolist() == counts
