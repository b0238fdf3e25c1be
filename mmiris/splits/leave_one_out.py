"""Leave-one-out splits with stored sampled negatives, vectorised with numpy.

Per user one interaction is held out for test and one for validation: chosen at random with
a seed (the paper), or the latest by timestamp (NCF; ties broken by the seeded random key).
For each held-out row, ``n_negatives`` distinct items are sampled uniformly from the items
the user never interacted with (train, valid and test alike). Same inputs and seed, same
split: one ``numpy.random.default_rng(seed)`` drives every draw in a fixed order.

Users with fewer than 3 interactions have no room for train + valid + test. ``short_users``
says what happens to them: ``"drop"`` (default: left out of the split entirely, counted as
``short_users_dropped``), ``"train"`` (all their interactions stay in train, no held-out
rows; counted as ``short_users_train_only``) or ``"error"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from mmiris.artifacts import Output
from mmiris.errors import InputError

MODES = ("random", "latest")
SHORT_USER_POLICIES = ("drop", "train", "error")
MIN_INTERACTIONS = 3  # one train, one valid, one test


@dataclass
class Held:
    """Held-out rows: user, item and their negatives [n, n_negatives]."""

    user: np.ndarray
    item: np.ndarray
    negatives: np.ndarray


@dataclass
class LeaveOneOut:
    train_user: np.ndarray
    train_item: np.ndarray
    valid: Held
    test: Held
    stats: dict = field(default_factory=dict)  # must hold n_users and n_items (load_split)

    def output(self, info: dict | None = None) -> Output:
        return Output(
            tables={
                "train": pa.table(
                    {"user_id": self.train_user.astype(np.int64), "item_id": self.train_item.astype(np.int64)}
                ),
                "valid": _held_table(self.valid),
                "test": _held_table(self.test),
            },
            stats=dict(self.stats),
            info=dict(info or {}),
        )


def _held_table(h: Held) -> pa.Table:
    n, k = h.negatives.shape
    offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32) if n else [0], pa.int32())
    negs = pa.ListArray.from_arrays(offsets, pa.array(h.negatives.ravel(), pa.int64()))
    return pa.table({"user_id": h.user.astype(np.int64), "item_id": h.item.astype(np.int64), "negatives": negs})


def order_within_users(user: np.ndarray, order_key: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """Row order grouped by user, within a user by ``order_key`` with random tie-breaks
    (``order_key`` None: a uniformly random order within each user)."""
    if order_key is None:
        return np.argsort(user + rng.random(len(user)))  # user, then a random key
    perm = rng.permutation(len(user))  # two stable sorts: key over a random permutation, then user
    by_key = perm[np.argsort(order_key[perm], kind="stable")]
    return by_key[np.argsort(user[by_key], kind="stable")]


def last_rows(user: np.ndarray, order: np.ndarray, eligible: np.ndarray, back: int = 0) -> np.ndarray:
    """Rows ``back`` places before each eligible user's last row in ``order`` (by user)."""
    u_sorted = user[order]
    ends = np.flatnonzero(np.r_[u_sorted[:-1] != u_sorted[1:], True]) if len(order) else np.zeros(0, dtype=np.int64)
    ends = ends[eligible[u_sorted[ends]]]
    return order[ends - back]


def hold_out_last(
    user: np.ndarray, order_key: np.ndarray | None, rng: np.random.Generator, eligible: np.ndarray
) -> np.ndarray:
    """One row per eligible user: the latest by ``order_key``, or random when it is None."""
    return last_rows(user, order_within_users(user, order_key, rng), eligible)


def sorted_unique(keys: np.ndarray) -> np.ndarray:
    """np.unique for int keys via one sort (np.unique's hash path is slow here)."""
    k = np.sort(keys)
    return k[np.r_[True, k[1:] != k[:-1]]] if len(k) else k


def sample_negatives(
    users: np.ndarray,
    pos_user: np.ndarray,
    pos_item: np.ndarray,
    n_items: int,
    n_negatives: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """[len(users), n_negatives] distinct items per row, uniform over the items that row's
    user has no positive for (``pos_*`` are all of the users' interactions)."""
    n = len(users)
    out = np.empty((n, n_negatives), dtype=np.int64)
    if n == 0 or n_negatives == 0:
        return out
    pos_keys = sorted_unique(pos_user.astype(np.int64) * n_items + pos_item)
    n_pos = np.bincount(pos_keys // n_items, minlength=int(users.max()) + 1)[users]
    short = n_items - n_pos < n_negatives
    if short.any():
        u = int(users[short][0])
        raise InputError(
            f"user {u} interacted with {int(n_pos[short][0])} of {n_items} items: fewer than "
            f"n_negatives={n_negatives} items are left to sample negatives from"
        )
    todo = np.arange(n)
    draws = 2 * n_negatives + 16
    while len(todo):
        rows = np.repeat(todo, draws)
        cand = rng.integers(0, n_items, size=len(rows))
        ok = ~_isin_sorted(users[rows].astype(np.int64) * n_items + cand, pos_keys)
        # Distinct within a row: keep each (row, item) pair's first draw only.
        _, first = np.unique(rows.astype(np.int64) * n_items + cand, return_index=True)
        once = np.zeros(len(rows), dtype=bool)
        once[first] = True
        ok &= once
        rank = np.cumsum(ok.reshape(len(todo), draws), axis=1)
        full = rank[:, -1] >= n_negatives
        take = ok.reshape(len(todo), draws) & (rank <= n_negatives) & full[:, None]
        out[todo[full]] = cand.reshape(len(todo), draws)[take].reshape(-1, n_negatives)
        todo = todo[~full]
        draws *= 4  # users with most items taken need more draws; retry just those
    return out


def _isin_sorted(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    if len(sorted_keys) == 0:
        return np.zeros(len(keys), dtype=bool)
    idx = np.searchsorted(sorted_keys, keys)
    idx[idx == len(sorted_keys)] = 0
    return sorted_keys[idx] == keys


def leave_one_out(
    user: np.ndarray,
    item: np.ndarray,
    timestamp: np.ndarray | None,
    n_users: int,
    n_items: int,
    *,
    mode: str = "random",
    n_negatives: int = 99,
    seed: int = 0,
    short_users: str = "drop",
) -> LeaveOneOut:
    """Split unique (user, item) pairs; see the module docstring."""
    if mode not in MODES:
        raise InputError(f"split mode {mode!r}: expected one of {MODES}")
    if short_users not in SHORT_USER_POLICIES:
        raise InputError(f"short_users={short_users!r}: expected one of {SHORT_USER_POLICIES}")
    if n_negatives < 0:
        raise InputError(f"n_negatives={n_negatives}: expected a number >= 0")
    if mode == "latest" and timestamp is None:
        raise InputError("split mode 'latest' needs timestamps; the interactions have none (use mode 'random')")
    user, item = user.astype(np.int64), item.astype(np.int64)
    rng = np.random.default_rng(seed)
    counts = np.bincount(user, minlength=n_users)
    short = (counts > 0) & (counts < MIN_INTERACTIONS)
    stats = {"n_users": int(n_users), "n_items": int(n_items), "mode": mode, "seed": seed, "n_negatives": n_negatives}
    if short.any():
        if short_users == "error":
            u = int(np.flatnonzero(short)[0])
            raise InputError(
                f"user {u} has {int(counts[u])} interaction(s) and {int(short.sum())} user(s) have "
                f"fewer than {MIN_INTERACTIONS}: no room for a leave-one-out split (use "
                f"short_users='drop' or 'train')"
            )
        if short_users == "drop":
            keep = ~short[user]
            stats["interactions_dropped"] = int((~keep).sum())
            user, item = user[keep], item[keep]
            timestamp = timestamp[keep] if timestamp is not None else None
    stats["short_users_dropped" if short_users == "drop" else "short_users_train_only"] = int(short.sum())
    eligible = counts >= MIN_INTERACTIONS
    key = np.asarray(timestamp, dtype=np.int64) if mode == "latest" else None
    order = order_within_users(user, key, rng)
    test_rows = last_rows(user, order, eligible)  # last in the order: test
    valid_rows = last_rows(user, order, eligible, back=1)  # the one before: validation
    rest = np.ones(len(user), dtype=bool)
    rest[test_rows] = False
    rest[valid_rows] = False
    test = Held(
        user[test_rows], item[test_rows], sample_negatives(user[test_rows], user, item, n_items, n_negatives, rng)
    )
    valid = Held(
        user[valid_rows], item[valid_rows], sample_negatives(user[valid_rows], user, item, n_items, n_negatives, rng)
    )
    stats.update(n_train=int(rest.sum()), n_valid=len(valid.user), n_test=len(test.user))
    return LeaveOneOut(user[rest], item[rest], valid, test, stats)
