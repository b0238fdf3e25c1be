"""HR@N and NDCG@N of the paper (eq. 13–14) from the rank of each user's held-out item.

Ranks are 0-based: rank r means r candidates are placed above the positive, so the
positive sits at position pos = r + 1 of eq. 14 and counts as a hit when r < N.

Ties are broken pessimistically: a candidate whose score EQUALS the positive's ranks
above it (so does any NaN score). A model that scores everything the same therefore gets
HR@N = 0 instead of a lucky hit, and a model cannot gain from ties.
"""

from __future__ import annotations

import math

import numpy as np
import torch

KS = (5, 10, 20)  # the cut-offs N reported by the paper's tables


def positive_ranks(pos: torch.Tensor, cand: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """0-based rank of ``pos[b]`` among ``cand[b, :]`` (where ``valid``), ties pessimistic.

    pos: [B] score of the held-out item; cand: [B, C] scores of the other candidates.
    """
    above = (cand >= pos[:, None]) | torch.isnan(cand) | torch.isnan(pos)[:, None]
    if valid is not None:
        above &= valid
    return above.sum(dim=1)


def metric_sums(ranks: torch.Tensor | np.ndarray, ks=KS) -> torch.Tensor:
    """Per-cut-off sums [hr@k..., ndcg@k..., n_users] as float64, ready for an all-reduce."""
    r = torch.as_tensor(ranks, dtype=torch.float64)
    hr = [(r < k).sum() for k in ks]
    gain = 1.0 / torch.log2(r + 2.0)  # eq. 14: 1 / log2(pos + 1), pos = r + 1
    ndcg = [torch.where(r < k, gain, torch.zeros_like(gain)).sum() for k in ks]
    return torch.stack([*hr, *ndcg, torch.tensor(float(len(r)), dtype=torch.float64)])


def metrics_from_sums(sums: torch.Tensor, ks=KS) -> dict[str, float]:
    """{"hr10": ..., "ndcg10": ...} from (possibly all-reduced) ``metric_sums``."""
    n = float(sums[-1])
    out = {}
    for i, k in enumerate(ks):
        out[f"hr{k}"] = float(sums[i]) / n if n else math.nan
        out[f"ndcg{k}"] = float(sums[len(ks) + i]) / n if n else math.nan
    return out


def metrics_from_ranks(ranks: torch.Tensor | np.ndarray, ks=KS) -> dict[str, float]:
    """Eq. 13 (HR@N) and eq. 14 (NDCG@N), averaged over users, for every N in ``ks``."""
    return metrics_from_sums(metric_sums(ranks, ks), ks)
