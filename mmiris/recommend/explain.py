"""Explanations (paper Fig. 1, Tables VII–IX): for a recommended item j, the user's
historical items i with the highest interest relevance a_ij from the model's attention."""

from __future__ import annotations

import torch

from mmiris.models.base import Recommender


def explain(model: Recommender, users: torch.Tensor, items: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` historical items of ``users[b]`` for each target ``items[b, t]``.

    Returns (item ids [B, T, k], relevance a_ij [B, T, k]); slots beyond a user's history
    length hold item -1 and relevance NaN. Raises NotImplementedError for models without
    attention (``model.has_attention`` is False).
    """
    history, weights, mask = model.attention(users, items)  # [B, L], [B, T, L], [B, L]
    B, T = items.shape
    if history.shape[1] == 0 or k <= 0:
        return (torch.full((B, T, max(k, 0)), -1, dtype=torch.long), torch.full((B, T, max(k, 0)), float("nan")))
    kk = min(k, history.shape[1])
    masked = weights.float().masked_fill(~mask[:, None, :], float("-inf"))
    rel, pos = masked.topk(kk, dim=2)  # sorted, highest relevance first
    ids = torch.gather(history[:, None, :].expand(B, T, -1), 2, pos)
    valid = torch.isfinite(rel)
    ids = ids.masked_fill(~valid, -1)
    rel = rel.masked_fill(~valid, float("nan"))
    if kk < k:  # shorter history than k everywhere in this batch
        ids = torch.cat([ids, torch.full((B, T, k - kk), -1, dtype=ids.dtype)], dim=2)
        rel = torch.cat([rel, torch.full((B, T, k - kk), float("nan"))], dim=2)
    return ids, rel
