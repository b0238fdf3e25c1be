"""FISM (Kabbur et al., KDD 2013), eq. 2: r̂_uj = |R_u⁺\\{j}|^-α (Σ_{i ∈ R_u⁺\\{j}} p_i)·q_j + b_j."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mmiris.models import register
from mmiris.models.item_similarity import ItemSimilarity, ItemSimilarityConfig


@dataclass
class FISMConfig(ItemSimilarityConfig):
    pass


@register
class FISM(ItemSimilarity):
    name = "fism"
    config_cls = FISMConfig

    def similarity(self, hist, hlen, items):
        # a_ij = 1, so the history sum is shared by all targets; j ∈ R_u⁺ is subtracted back out.
        L = hist.shape[1]
        in_hist = torch.arange(L, device=hist.device)[None, :] < hlen[:, None]  # [B, L]
        PH = self.P(hist) * in_hist[..., None]
        total = PH.sum(1)  # [B, k]
        # position of j in the (sorted) history, found by binary search: no [B, T, L] tensor
        keyed = torch.where(in_hist, hist, torch.full_like(hist, self.n_items))
        pos = torch.searchsorted(keyed, items.contiguous()).clamp_max(max(L - 1, 0))
        found = (keyed.gather(1, pos) == items) if L else torch.zeros_like(items, dtype=torch.bool)
        agg = total[:, None, :] - found[..., None] * self.P(items)  # Σ_{i ∈ R_u⁺\{j}} p_i
        n = (hlen[:, None] - found.long()).clamp_min(0)
        s = (agg * self.Q(items)).sum(-1)
        if self.config.alpha != 0:
            s = s * n.clamp_min(1).to(s.dtype).pow(-self.config.alpha)
        return s * (n > 0)
