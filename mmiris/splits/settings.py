"""Evaluation settings derived from a leave-one-out split, where content should matter most.

- **Sparse users** (``sparse_users``): keep a fraction of each user's training interactions
  (at least one), chosen with a seed; the validation and test items and their stored
  negatives are the full split's, so every figure compares row by row with the full split.
- **Cold items** (``cold_items``): hold out a fraction of the items that have training
  interactions, completely: none of their interactions stays in train. Every interaction of a
  held-out item (train, validation or test in the full split) becomes a test case, ranked
  against ``n_negatives`` stored negatives drawn from the *other* cold items the user never
  interacted with — so a model that cannot tell cold items apart scores like random (HR@10 ≈
  10 / (1 + n_negatives)). Validation keeps the full split's rows whose item is warm (early
  stopping on what can be learned). A user whose history was only cold items keeps an empty
  history: such cases are scored honestly (bias only), never skipped.
  With ``valid_fraction`` (``--cold-valid``) a second, disjoint set of items is held out of
  training too, and validation becomes cold as well: one case per user who interacted with
  one of those items (chosen with the seed), ranked against ``n_negatives`` of the other
  validation items, as the test cases are (a user who interacted with so many of them that
  fewer than ``n_negatives`` are left has no validation case; the stats count them). Early
  stopping, ``select_on`` and weights chosen on validation then see items no training ever
  touched. The test items, their cases and
  negatives are exactly those of the split without it, so figures compare row by row.

Both return a ``LeaveOneOut`` (the split artifact's tables) whose stats say which setting
produced it; deterministic for a seed.
"""

from __future__ import annotations

import numpy as np

from mmiris.data.split import SplitData
from mmiris.errors import InputError
from mmiris.splits.leave_one_out import Held, LeaveOneOut, sample_negatives

SETTINGS = ("full", "sparse", "cold")


def _base_stats(split: SplitData, setting: str) -> dict:
    return {
        "n_users": split.n_users,
        "n_items": split.n_items,
        "setting": setting,
        "derived_from": str(split.ref) if split.ref is not None else None,
    }


def sparse_users(split: SplitData, keep: float, seed: int = 0) -> LeaveOneOut:
    """Each user's training interactions subsampled to ``ceil(keep · n)`` (≥ 1)."""
    if not 0.0 < keep <= 1.0:
        raise InputError(f"--keep {keep}: expected a fraction in (0, 1]")
    rng = np.random.default_rng(seed)
    users, items = split.train_users.astype(np.int64), split.train_items.astype(np.int64)
    order = np.argsort(users + rng.random(len(users)), kind="stable")  # by user, random within
    u_sorted = users[order]
    starts = np.flatnonzero(np.r_[True, u_sorted[1:] != u_sorted[:-1]]) if len(order) else np.zeros(0, np.int64)
    counts = np.diff(np.r_[starts, len(order)])
    quota = np.maximum(1, np.ceil(keep * counts - 1e-9).astype(np.int64))
    pos_in_user = np.arange(len(order)) - np.repeat(starts, counts)
    kept = np.sort(order[pos_in_user < np.repeat(quota, counts)])
    stats = {
        **_base_stats(split, "sparse"),
        "keep": keep,
        "seed": seed,
        "n_train": int(len(kept)),
        "n_train_full": int(len(users)),
        "n_valid": int(len(split.valid_users)),
        "n_test": int(len(split.test_users)),
    }
    return LeaveOneOut(
        users[kept],
        items[kept],
        Held(split.valid_users, split.valid_items, split.valid_negatives),
        Held(split.test_users, split.test_items, split.test_negatives),
        stats,
    )


def cold_items(
    split: SplitData, fraction: float, seed: int = 0, n_negatives: int = 99, valid_fraction: float = 0.0
) -> LeaveOneOut:
    """``fraction`` of the trained items held out completely; their interactions become test
    cases. ``valid_fraction``: another share held out, whose users' cases become validation."""
    if not 0.0 < fraction < 1.0:
        raise InputError(f"--cold-items {fraction}: expected a fraction in (0, 1)")
    if not 0.0 <= valid_fraction < 1.0 - fraction:
        raise InputError(
            f"--cold-valid {valid_fraction}: expected a fraction in [0, {1.0 - fraction:g}) "
            f"(what --cold-items {fraction} leaves)"
        )
    if n_negatives < 1:
        raise InputError(f"--negatives {n_negatives}: expected a number >= 1")
    rng = np.random.default_rng(seed)
    warm_items = np.unique(split.train_items)
    n_cold = max(1, int(round(fraction * len(warm_items))))
    if n_cold < n_negatives + 1:
        raise InputError(
            f"--cold-items {fraction}: {n_cold} cold items of {len(warm_items)} cannot give each case "
            f"{n_negatives} negatives from the other cold items; hold out more items or lower --negatives"
        )
    cold = np.sort(rng.choice(warm_items, n_cold, replace=False))
    is_cold = np.zeros(split.n_items, dtype=bool)
    is_cold[cold] = True

    all_u = np.concatenate([split.train_users, split.valid_users, split.test_users]).astype(np.int64)
    all_i = np.concatenate([split.train_items, split.valid_items, split.test_items]).astype(np.int64)
    keys = np.unique(all_u * split.n_items + all_i)  # each (user, item) once
    pos_u, pos_i = keys // split.n_items, keys % split.n_items
    case = is_cold[pos_i]
    test_u, test_i = pos_u[case], pos_i[case]
    # Negatives among the other cold items: sample in the cold items' own index space.
    cold_index = np.full(split.n_items, -1, np.int64)
    cold_index[cold] = np.arange(n_cold)
    try:
        neg_local = sample_negatives(test_u, test_u, cold_index[test_i], n_cold, n_negatives, rng)
    except InputError as exc:
        raise InputError(f"--cold-items {fraction}: {exc} (among the {n_cold} cold items)") from None
    test_neg = cold[neg_local]

    keep_train = ~is_cold[split.train_items]
    keep_valid = ~is_cold[split.valid_items]
    valid = Held(split.valid_users[keep_valid], split.valid_items[keep_valid], split.valid_negatives[keep_valid])
    extra: dict = {}
    if valid_fraction:
        vcold, valid, dropped = _cold_validation(
            split, warm_items, is_cold, pos_u, pos_i, valid_fraction, seed, n_negatives
        )
        keep_train &= ~np.isin(split.train_items, vcold)
        extra = {
            "cold_valid_fraction": valid_fraction,
            "n_cold_valid_items": int(len(vcold)),
            "validation": "cold",
            "valid_users_without_negatives": dropped,
        }
    stats = {
        **_base_stats(split, "cold"),
        "cold_fraction": fraction,
        "seed": seed,
        "n_cold_items": int(n_cold),
        "n_negatives": n_negatives,
        "n_train": int(keep_train.sum()),
        "n_valid": int(len(valid.user)),
        "n_test": int(len(test_u)),
        "n_test_users": int(len(np.unique(test_u))),
        "test_users_with_empty_history": int(len(np.setdiff1d(np.unique(test_u), split.train_users[keep_train]))),
        **extra,
    }
    return LeaveOneOut(
        split.train_users[keep_train], split.train_items[keep_train], valid, Held(test_u, test_i, test_neg), stats
    )


def _cold_validation(
    split: SplitData,
    warm_items: np.ndarray,
    is_cold: np.ndarray,
    pos_u: np.ndarray,
    pos_i: np.ndarray,
    valid_fraction: float,
    seed: int,
    n_negatives: int,
) -> tuple[np.ndarray, Held, int]:
    """The cold validation items (a share of ``warm_items``, none of the test's cold items),
    their cases and the number of users left without one: per user with an interaction among
    them, one such (user, item), against ``n_negatives`` of the other validation items the
    user never interacted with. Its own generator (seeded from ``seed``), so the test items
    and negatives do not move."""
    rng = np.random.default_rng([seed, 1])
    pool = warm_items[~is_cold[warm_items]]
    n_v = max(1, int(round(valid_fraction * len(warm_items))))
    if n_v < n_negatives + 1 or n_v > len(pool):
        raise InputError(
            f"--cold-valid {valid_fraction}: {n_v} validation items cannot give each case {n_negatives} "
            f"negatives from the other validation items; hold out more items or lower --negatives"
        )
    vcold = np.sort(rng.choice(pool, n_v, replace=False))
    index = np.full(split.n_items, -1, np.int64)
    index[vcold] = np.arange(n_v)
    hit = index[pos_i] >= 0
    cu, ci = pos_u[hit], pos_i[hit]  # sorted by user (pos keys are user-major)
    # a user who interacted with so many validation items that fewer than n_negatives are
    # left gets no validation case (counted in the stats; the test keeps every case)
    n_pos = np.bincount(cu, minlength=split.n_users)
    enough = n_v - n_pos[cu] >= n_negatives
    dropped = int(len(np.unique(cu[~enough])))
    cu, ci = cu[enough], ci[enough]
    order = np.argsort(cu + rng.random(len(cu)), kind="stable")  # by user, random within
    cu, ci = cu[order], ci[order]
    first = np.flatnonzero(np.r_[True, cu[1:] != cu[:-1]]) if len(cu) else np.zeros(0, np.int64)
    vu, vi = cu[first], ci[first]
    try:
        neg_local = sample_negatives(vu, cu, index[ci], n_v, n_negatives, rng)
    except InputError as exc:
        raise InputError(f"--cold-valid {valid_fraction}: {exc} (among the {n_v} validation items)") from None
    return vcold, Held(vu, vi, vcold[neg_local]), dropped
