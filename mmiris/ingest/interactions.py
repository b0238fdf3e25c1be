"""Raw source interactions to the ``interactions`` artifact: dedupe, dense ids, counted stats.

Implicit feedback (paper §IV-A): every rating is a positive; the rating value is kept only
for reference. A (user, item) pair seen more than once is kept once — the row with the
latest timestamp — and the number dropped is reported as ``duplicates_dropped``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from mmiris.artifacts import Output
from mmiris.ingest.reindex import dense_ids, source_strings


@dataclass
class Interactions:
    """Interactions in dense ids with the source ids of users and items (index = dense id)."""

    user: np.ndarray  # int64 dense user ids
    item: np.ndarray  # int64 dense item ids
    rating: pa.Array  # float32, nullable
    timestamp: pa.Array  # int64 seconds, nullable
    user_source: list[str]
    item_source: list[str]
    stats: dict = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.user_source)

    @property
    def n_items(self) -> int:
        return len(self.item_source)

    def output(self, info: dict | None = None) -> Output:
        stats = {"n_users": self.n_users, "n_items": self.n_items, "n_interactions": int(len(self.user)), **self.stats}
        return Output(
            tables={
                "interactions": pa.table(
                    {"user_id": self.user, "item_id": self.item, "rating": self.rating, "timestamp": self.timestamp}
                ),
                "users": pa.table(
                    {
                        "user_id": np.arange(self.n_users, dtype=np.int64),
                        "source_id": pa.array(self.user_source, pa.string()),
                    }
                ),
            },
            stats=stats,
            info=dict(info or {}),
        )

    def select(self, keep: np.ndarray, reindex: bool = True) -> Interactions:
        """Rows where ``keep``; with ``reindex`` users/items left without rows are dropped
        and the rest renumbered densely, in the same order."""
        user, item = self.user[keep], self.item[keep]
        users, items = self.user_source, self.item_source
        if reindex:
            ukeep, user = np.unique(user, return_inverse=True)
            ikeep, item = np.unique(item, return_inverse=True)
            users = [users[i] for i in ukeep.tolist()]
            items = [items[i] for i in ikeep.tolist()]
        mask = pa.array(keep)
        return Interactions(
            user.astype(np.int64),
            item.astype(np.int64),
            self.rating.filter(mask),
            self.timestamp.filter(mask),
            users,
            items,
            dict(self.stats),
        )


def build_interactions(
    users: np.ndarray, items: np.ndarray, rating: pa.Array | None = None, timestamp: pa.Array | None = None
) -> Interactions:
    """Source ids (ints or strings) to dense ids, after dropping duplicate pairs."""
    n = len(users)
    rating = pa.nulls(n, pa.float32()) if rating is None else rating.cast(pa.float32())
    timestamp = pa.nulls(n, pa.int64()) if timestamp is None else timestamp.cast(pa.int64())
    ucode, usrc = dense_ids(users)
    icode, isrc = dense_ids(items)
    keep = dedupe_mask(ucode, icode, timestamp, len(isrc))
    dropped = int(n - keep.sum())
    inter = Interactions(ucode, icode, rating, timestamp, source_strings(usrc), source_strings(isrc))
    if dropped:
        inter = inter.select(keep)
    inter.stats["duplicates_dropped"] = dropped
    return inter


def dedupe_mask(user: np.ndarray, item: np.ndarray, timestamp: pa.Array, n_items: int) -> np.ndarray:
    """True for the one row kept per (user, item): the latest timestamp, then the last row."""
    ts = timestamp.fill_null(np.iinfo(np.int64).min).to_numpy(zero_copy_only=False)
    key = user.astype(np.int64) * max(n_items, 1) + item
    order = np.lexsort((np.arange(len(key)), ts, key))
    sorted_key = key[order]
    last = np.ones(len(key), dtype=bool)
    last[:-1] = sorted_key[:-1] != sorted_key[1:]
    keep = np.zeros(len(key), dtype=bool)
    keep[order[last]] = True
    return keep
