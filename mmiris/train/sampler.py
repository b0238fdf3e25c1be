"""Training instances for one epoch: K sampled negatives per positive, grouped by user.

The plan of an epoch is a pure function of (seed, epoch) and identical on every rank:

1. every training positive (u, i) gets K negatives drawn uniformly from the items u never
   interacted with in training (vectorised rejection sampling);
2. users are ordered by history length with a ±10 % random jitter (bucketing: a batch holds
   users of similar length, so little padding), each user's positives shuffled and kept
   together; or, with ``by_user=False``, all positives shuffled together, so a batch mixes
   many users as the NCF and BPR papers train (MF, VBPR, NeuMF). With ``by_user=False`` and
   ``bucket=True`` (a model that reads histories, trained on mixed batches) positives are
   ordered by their user's history length jittered ±10 % per *positive*: users of similar
   length interleave, so a batch holds many users and still little history padding;
3. global batch b is positives [b·P, (b+1)·P) of that order, P = batch_size // (1 + K), so a
   batch holds P·(1+K) ≤ batch_size instances; the order of batches is shuffled;
4. a rank takes a contiguous 1/world_size slice of each global batch's positives (users
   are sharded across ranks; a user split by a slice boundary appears in both halves).

Because the global batches do not depend on the number of ranks, one process and N ranks
take the same gradient steps (up to floating-point summation order). A rank whose slice is
empty (only possible for a batch smaller than the world) gets one dummy instance with
weight 0 so every rank still runs the same collective operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mmiris.data.split import UserHistory
from mmiris.errors import MmirisError
from mmiris.models.base import Batch


@dataclass
class Shard:
    """This rank's part of one global batch; ``n_local / n_global`` weights its loss."""

    batch: Batch
    n_local: int  # positives in this shard (0: a dummy shard)
    n_global: int  # positives in the global batch


@dataclass
class EpochPlan:
    users: np.ndarray  # int64 [P] positives' users, in batch order
    items: np.ndarray  # int64 [P] positives' items
    negatives: np.ndarray  # int64 [P, K]
    bounds: np.ndarray  # int64 [n_batches + 1] global batch b = positives bounds[b]:bounds[b+1]

    @property
    def n_batches(self) -> int:
        return len(self.bounds) - 1


def sample_negatives(
    history: UserHistory, users: np.ndarray, k: int, rng: np.random.Generator, pool: np.ndarray | None = None
) -> np.ndarray:
    """[len(users), k] items drawn uniformly from those not in each user's history (and, with
    ``pool``, only among the items of ``pool``: e.g. those the training data knows)."""
    n_items = history.n_items
    if pool is not None:  # draw in the pool's index space, then map back
        local = UserHistory.from_pairs(*_pairs_in(history, pool), history.n_users, len(pool))
        return pool[sample_negatives(local, users, k, rng)]
    lens = history.lengths(users)
    full = lens >= n_items
    if full.any():
        raise MmirisError(
            f"user {int(users[full][0])} interacted with all {n_items} items: no negative can be sampled for it"
        )
    # Sorted keys u * n_items + i of every training pair: CSR order is (user, item) sorted.
    keys = np.repeat(np.arange(history.n_users, dtype=np.int64), history.lengths()) * n_items + history.indices
    out = rng.integers(0, n_items, size=(len(users), k), dtype=np.int64)
    todo = np.arange(out.size)
    flat, flat_users = out.reshape(-1), np.repeat(users, k)
    while len(todo):
        q = flat_users[todo] * n_items + flat[todo]
        pos = np.minimum(np.searchsorted(keys, q), len(keys) - 1) if len(keys) else np.zeros(len(q), np.int64)
        hit = keys[pos] == q if len(keys) else np.zeros(len(q), bool)
        todo = todo[hit]
        flat[todo] = rng.integers(0, n_items, size=len(todo), dtype=np.int64)
    return out


def _pairs_in(history: UserHistory, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The training pairs whose item is in ``pool`` (sorted ids), as (user, index into pool)."""
    users = np.repeat(np.arange(history.n_users, dtype=np.int64), history.lengths())
    items = history.indices.astype(np.int64)
    pos = np.searchsorted(pool, items)
    ok = (pos < len(pool)) & (pool[np.minimum(pos, len(pool) - 1)] == items)
    return users[ok], pos[ok]


NEGATIVES_FROM = ("all", "trained")


class TrainSampler:
    """Deterministic epoch plans and this rank's ``Shard``s (see the module docstring)."""

    def __init__(
        self,
        history: UserHistory,
        negatives: int = 4,
        batch_size: int = 512,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        jitter: float = 0.1,
        negatives_from: str = "all",
        by_user: bool = True,
        bucket: bool = False,
    ):
        if batch_size < 1 + negatives:
            raise MmirisError(f"batch_size {batch_size} cannot hold one positive and its {negatives} negatives")
        self.history, self.k, self.batch_size = history, negatives, batch_size
        self.seed, self.rank, self.world_size, self.jitter = seed, rank, world_size, jitter
        self.by_user, self.bucket = by_user, bucket
        self.positives_per_batch = batch_size // (1 + negatives)
        lens = history.lengths()
        self._users = np.repeat(np.arange(history.n_users, dtype=np.int64), lens)
        self._items = history.indices.astype(np.int64)
        if not len(self._items):
            raise MmirisError("the split has no training interactions")
        if negatives_from not in NEGATIVES_FROM:
            raise MmirisError(f"negatives_from {negatives_from!r}: expected one of {NEGATIVES_FROM}")
        # "trained": negatives only among items with a training interaction — the catalogue
        # known at training time; items held out as cold are never pushed down as negatives.
        self._pool = np.unique(self._items) if negatives_from == "trained" else None
        self._plans: dict[int, EpochPlan] = {}

    def plan(self, epoch: int) -> EpochPlan:
        if epoch not in self._plans:
            self._plans = {epoch: self._make_plan(epoch)}  # keep one epoch in memory
        return self._plans[epoch]

    def _make_plan(self, epoch: int) -> EpochPlan:
        rng = np.random.default_rng([self.seed, epoch])
        h = self.history
        if self.by_user:
            lens = h.lengths().astype(np.float64)
            # User order: by jittered history length (bucketing), random among equals.
            user_key = lens * np.exp(rng.uniform(-self.jitter, self.jitter, size=h.n_users))
            user_pos = np.empty(h.n_users, np.int64)
            user_pos[np.argsort(user_key, kind="stable")] = np.arange(h.n_users)
            order = np.lexsort((rng.random(len(self._users)), user_pos[self._users]))
        elif self.bucket:  # mixed users, bucketed by history length (per-positive jitter)
            lens = h.lengths().astype(np.float64)[self._users]
            key = lens * np.exp(rng.uniform(-self.jitter, self.jitter, size=len(self._users)))
            order = np.argsort(key, kind="stable")
        else:
            order = rng.permutation(len(self._users))
        users, items = self._users[order], self._items[order]
        negatives = sample_negatives(h, users, self.k, rng, self._pool)
        P = self.positives_per_batch
        n = len(users)
        starts = np.arange(0, n, P)
        perm = rng.permutation(len(starts))  # shuffle batch order, keep each batch contiguous
        sizes = np.minimum(starts[perm] + P, n) - starts[perm]
        bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        seg = np.repeat(starts[perm] - bounds[:-1], sizes) + np.arange(n)
        return EpochPlan(users[seg], items[seg], negatives[seg], bounds)

    def n_batches(self, epoch: int) -> int:
        return self.plan(epoch).n_batches

    def shard(self, epoch: int, b: int) -> Shard:
        """This rank's part of global batch ``b`` of ``epoch``."""
        p = self.plan(epoch)
        lo, hi = int(p.bounds[b]), int(p.bounds[b + 1])
        n = hi - lo
        a = lo + (n * self.rank) // self.world_size
        z = lo + (n * (self.rank + 1)) // self.world_size
        if z == a:  # dummy instance so collectives line up; weight 0
            return Shard(make_batch(p.users[lo : lo + 1], p.items[lo : lo + 1], p.negatives[lo : lo + 1]), 0, n)
        return Shard(make_batch(p.users[a:z], p.items[a:z], p.negatives[a:z]), z - a, n)

    def shards(self, epoch: int, start: int = 0):
        """Yield (batch index, Shard) from batch ``start`` on: resuming skips, not replays."""
        for b in range(start, self.n_batches(epoch)):
            yield b, self.shard(epoch, b)


def make_batch(users: np.ndarray, items: np.ndarray, negatives: np.ndarray) -> Batch:
    """Group consecutive positives of the same user into one row: [pos, its K negs, pos, ...]."""
    k = negatives.shape[1]
    w = 1 + k
    n = len(users)
    new_row = np.ones(n, dtype=bool)
    new_row[1:] = users[1:] != users[:-1]
    row = np.cumsum(new_row) - 1
    row_start = np.flatnonzero(new_row)
    j = np.arange(n) - row_start[row]  # index of the positive within its row
    counts = np.diff(np.append(row_start, n))
    R, T = len(row_start), int(counts.max()) * w
    it = np.zeros((R, T), np.int64)
    lab = np.zeros((R, T), np.float32)
    mask = np.zeros((R, T), bool)
    grp = np.zeros((R, T), np.int64)
    cols = j[:, None] * w + np.arange(w)[None, :]  # [n, w]
    rows = np.broadcast_to(row[:, None], cols.shape)
    it[rows, cols] = np.concatenate([items[:, None], negatives], axis=1)
    lab[row, j * w] = 1.0
    mask[rows, cols] = True
    grp[rows, cols] = j[:, None]
    return Batch(
        torch.from_numpy(users[row_start].copy()),
        torch.from_numpy(it),
        torch.from_numpy(lab),
        torch.from_numpy(mask),
        torch.from_numpy(grp),
    )
