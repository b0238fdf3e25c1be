"""Explanation specificity: do a user's recommendations get their own reasons?

For each user, take the top-k explaining history items (by a_ij) of each of the top-N
recommendations, and average the Jaccard overlap |E_a ∩ E_b| / |E_a ∪ E_b| over all pairs of
recommendations (a, b). The figure is the mean over users: 1 means every recommendation is
explained by the same history items (the explanations ignore the target), lower means the
attention picks target-specific reasons, as the paper's Tables VII–IX claim.
"""

from __future__ import annotations

import numpy as np


def explanation_overlap(explain_items: np.ndarray) -> float:
    """Mean pairwise Jaccard overlap of explanation sets, averaged over users.

    ``explain_items``: int [U, N, k] history item ids per (user, recommendation), -1 where a
    slot is empty (short history, fewer than N recommendations). Pairs with an empty set are
    skipped, and so are users with fewer than two non-empty sets.
    Returns NaN when no user has a pair.
    """
    ex = np.asarray(explain_items)
    if ex.ndim != 3:
        raise ValueError(f"explain_items must be [users, recommendations, k], got shape {ex.shape}")
    U, N, k = ex.shape
    if U == 0 or N < 2 or k == 0:
        return float("nan")
    # Sets as sorted rows; intersection sizes from pairwise equality of slots (k is small).
    valid = ex >= 0
    # eq[u, a, b, s, t] = ex[u, a, s] == ex[u, b, t] and both valid; k ≤ ~10 keeps this small.
    eq = (ex[:, :, None, :, None] == ex[:, None, :, None, :]) & valid[:, :, None, :, None] & valid[:, None, :, None, :]
    inter = eq.any(-1).sum(-1)  # [U, N, N]: ids of a's set found in b's set (sets hold distinct ids)
    size = valid.sum(-1)  # [U, N]
    union = size[:, :, None] + size[:, None, :] - inter
    pair = np.triu(np.ones((N, N), dtype=bool), 1)[None] & (size[:, :, None] > 0) & (size[:, None, :] > 0)
    jac = np.where(pair, inter / np.maximum(union, 1), 0.0)
    n_pairs = pair.sum((1, 2))
    has = n_pairs > 0
    if not has.any():
        return float("nan")
    per_user = jac.sum((1, 2))[has] / n_pairs[has]
    return float(per_user.mean())
