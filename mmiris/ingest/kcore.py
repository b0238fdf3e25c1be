"""k-core filtering: drop users and items with fewer than k interactions, until none are left.

Dropping an item can push a user below k and the other way round, so the filter repeats
to a fixed point (the paper keeps the 5-core of the Amazon data).
"""

from __future__ import annotations

import numpy as np


def kcore_mask(user: np.ndarray, item: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """``(keep, iterations)``: rows of the k-core of the (unique) user-item pairs."""
    keep = np.ones(len(user), dtype=bool)
    if k <= 1:
        return keep, 0
    n_users = int(user.max()) + 1 if len(user) else 0
    n_items = int(item.max()) + 1 if len(item) else 0
    iterations = 0
    while True:
        iterations += 1
        ucount = np.bincount(user[keep], minlength=n_users)
        icount = np.bincount(item[keep], minlength=n_items)
        new = keep & (ucount[user] >= k) & (icount[item] >= k)
        if new.sum() == keep.sum():
            return new, iterations
        keep = new
