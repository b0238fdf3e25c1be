"""Explanation specificity (mmiris/eval/explanations.py) against a plain-Python reference."""

import itertools

import numpy as np
import pytest

from mmiris.eval.explanations import explanation_overlap


def reference(ex: np.ndarray) -> float:
    per_user = []
    for user in ex:
        sets = [set(int(i) for i in row if i >= 0) for row in user]
        pairs = [(a, b) for a, b in itertools.combinations(sets, 2) if a and b]
        if pairs:
            per_user.append(sum(len(a & b) / len(a | b) for a, b in pairs) / len(pairs))
    return float(np.mean(per_user)) if per_user else float("nan")


def test_same_reasons_everywhere_is_one_and_disjoint_is_zero():
    same = np.tile(np.array([[4, 7, 9]]), (1, 10, 1))
    assert explanation_overlap(same) == 1.0
    disjoint = np.arange(30).reshape(1, 10, 3)
    assert explanation_overlap(disjoint) == 0.0


def test_order_within_a_set_does_not_matter():
    ex = np.array([[[1, 2, 3], [3, 1, 2], [2, 3, 1]]])
    assert explanation_overlap(ex) == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_matches_reference_with_empty_slots(seed):
    rng = np.random.default_rng(seed)
    U, N, k = 7, 10, 3
    ex = np.stack([np.stack([rng.choice(12, size=k, replace=False) for _ in range(N)]) for _ in range(U)])
    ex[rng.random((U, N, k)) < 0.2] = -1  # short histories / missing recommendations
    ex[0] = -1  # a user with no explanations at all is skipped
    ex[1, 1:] = -1  # one non-empty set: no pair, skipped
    assert explanation_overlap(ex) == pytest.approx(reference(ex), abs=1e-12)


def test_no_pairs_is_nan_and_bad_shape_is_an_error():
    assert np.isnan(explanation_overlap(np.full((2, 10, 3), -1)))
    with pytest.raises(ValueError, match="users, recommendations, k"):
        explanation_overlap(np.zeros((10, 3)))


def share_reference(lw, mask) -> float:
    """Two-way decomposition written out with loops: e_ij = μ + α_i + γ_j + ε_ij."""
    shares = []
    for u in range(lw.shape[0]):
        cols = [s for s in range(lw.shape[2]) if mask[u, s]]
        T, H = lw.shape[1], len(cols)
        if T < 2 or H < 2:
            continue
        x = [[float(lw[u, t, s]) for s in cols] for t in range(T)]
        grand = sum(map(sum, x)) / (T * H)
        row = [sum(x[t]) / H for t in range(T)]  # per target
        col = [sum(x[t][i] for t in range(T)) / T for i in range(H)]  # per history item
        inter = sum((x[t][i] - row[t] - col[i] + grand) ** 2 for t in range(T) for i in range(H))
        hist = sum((x[t][i] - row[t]) ** 2 for t in range(T) for i in range(H))
        if hist > 0:
            shares.append(inter / hist)
    return sum(shares) / len(shares) if shares else float("nan")


def test_attention_target_share_zero_when_targets_rank_history_alike_one_when_independent():
    from mmiris.eval.explanations import attention_target_share

    rng = np.random.default_rng(0)
    alpha = rng.normal(size=(3, 1, 6))  # a per-history-item preference
    gamma = rng.normal(size=(3, 5, 1))  # a per-target constant (the softmax normaliser, say)
    mask = np.ones((3, 6), dtype=bool)
    assert attention_target_share(alpha + gamma, mask) == pytest.approx(0.0, abs=1e-12)
    inter = rng.normal(size=(3, 5, 6))
    inter -= inter.mean(axis=1, keepdims=True) + inter.mean(axis=2, keepdims=True) - inter.mean((1, 2), keepdims=True)
    assert attention_target_share(inter + gamma, mask) == pytest.approx(1.0)


def test_attention_target_share_matches_the_reference_with_padding_and_short_users():
    from mmiris.eval.explanations import attention_target_share

    rng = np.random.default_rng(1)
    lw = rng.normal(size=(5, 4, 7))
    lw[:, :, 2] *= 3.0  # one history item everyone attends to
    mask = np.ones((5, 7), dtype=bool)
    mask[0, 4:] = False  # padding slots: their values must not count
    lw[0, :, 4:] = 1e9
    mask[1, 1:] = False  # one history item: no share
    got = attention_target_share(lw, mask)
    assert got == pytest.approx(share_reference(lw, mask))
    assert 0.0 < got < 1.0
    assert np.isnan(attention_target_share(lw[:, :1], mask))  # one target per user
    with pytest.raises(ValueError, match="mask"):
        attention_target_share(lw, mask[:, :3])
