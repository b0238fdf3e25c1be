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


def attention_target_share(log_weights: np.ndarray, mask: np.ndarray) -> float:
    """How much of the attention depends on the target: the share of the variance of
    log a_ij that is neither a per-target constant nor a per-history-item constant.

    ``log_weights``: [U, T, L] log a_ij of each user's history slots (L) for T targets;
    ``mask``: bool [U, L], the real history slots. Per user, over the valid slots: centre each
    target's column over the history (softmax normalisation and target-only terms cancel
    there), split the centred matrix M into a per-history-item mean α_i and the rest ε_ij, and
    take Σε² / ΣM². 0: every target ranks the history the same way (the explanations cannot
    depend on the target); 1: nothing is shared across targets. Mean over users with at least
    two history items and two targets; NaN when there is none.
    """
    lw = np.asarray(log_weights, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    if lw.ndim != 3 or m.shape != (lw.shape[0], lw.shape[2]):
        raise ValueError(f"log_weights [U, T, L] and mask [U, L] expected, got {lw.shape} and {m.shape}")
    shares = []
    for u in range(lw.shape[0]):
        x = lw[u][:, m[u]]  # [T, H]
        if x.shape[0] < 2 or x.shape[1] < 2:
            continue
        centred = x - x.mean(axis=1, keepdims=True)  # per target, over the history
        rest = centred - centred.mean(axis=0, keepdims=True)  # minus the per-history-item mean
        total = float((centred**2).sum())
        if total > 0:
            shares.append(float((rest**2).sum()) / total)
    return float(np.mean(shares)) if shares else float("nan")
