"""Dense re-indexing of source ids, keeping the mapping back to them."""

from __future__ import annotations

import numpy as np


def dense_ids(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, uniques)``: ``uniques[codes] == values``, codes in 0..len(uniques)-1.

    Ids are numbered in sorted source order (numeric for integer ids), so re-ingesting the
    same data in another row order gives the same dense ids.
    """
    uniques, codes = np.unique(np.asarray(values), return_inverse=True)
    return codes.astype(np.int64).ravel(), uniques


def source_strings(uniques: np.ndarray) -> list[str]:
    return [str(v) for v in uniques.tolist()]
