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
