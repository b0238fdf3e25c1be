"""Losses of §III-D, each reduced to the MEAN over the batch's valid instances.

The trainer computes ``loss_fn(model.scores(b.users, b.items), b.labels, b.mask, b.group)
+ model.regularization()``. The paper writes eq. 9–12 as sums over instances (with ½); we
use the mean, as NAIS's public code does (``tf.losses.log_loss``), so a step's size does not
depend on the batch size. The L2 terms λ·‖θ‖²_F (eq. 12) are added unscaled, over whole
parameter matrices, so λ here is relative to the mean loss: λ_here = 2·λ_eq12 / N for a
batch of N instances.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _valid(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(like, dtype=torch.bool) if mask is None else mask.bool()


def pointwise_log_loss(
    logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None, group: torch.Tensor | None = None
) -> torch.Tensor:
    """Eq. 10/12: −[y log σ(r̂) + (1−y) log(1−σ(r̂))], mean over valid instances (the default)."""
    m = _valid(mask, logits)
    per = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none")
    return (per * m).sum() / m.sum().clamp_min(1)


def squared_loss(
    logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None, group: torch.Tensor | None = None
) -> torch.Tensor:
    """Eq. 9: ½ (r − r̂)² on the raw score r̂ (no sigmoid), mean over valid instances."""
    m = _valid(mask, logits)
    per = 0.5 * (labels.to(logits.dtype) - logits) ** 2
    return (per * m).sum() / m.sum().clamp_min(1)


def bpr_loss(
    logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None, group: torch.Tensor | None = None
) -> torch.Tensor:
    """Eq. 11 as BPR defines it: −ln σ(r̂_ui − r̂_ux) for each negative x paired (same row,
    same ``group`` id) with its positive i; mean over pairs. Eq. 11's printed −ln(r̂_ui − r̂_ux)
    lacks the σ of the BPR paper it cites. Each group must hold exactly one positive."""
    if group is None:
        raise ValueError("bpr_loss needs Batch.group to pair each negative with its positive")
    m = _valid(mask, logits)
    pos = m & (labels > 0.5)
    neg = m & (labels <= 0.5)
    B, T = logits.shape
    row = torch.arange(B, device=logits.device)[:, None].expand(B, T)
    # one key per (row, group); positives write their score, negatives read it
    g = group - group.min() if group.numel() else group
    key = row * (int(g.max()) + 1 if g.numel() else 1) + g
    uniq, inv = torch.unique(key[m], return_inverse=True)
    slot = torch.full_like(key, -1)
    slot[m] = inv
    n_pos = torch.zeros(len(uniq), device=logits.device).index_add_(0, slot[pos], torch.ones_like(logits[pos]))
    if (n_pos[slot[neg]] != 1).any():
        raise ValueError("bpr_loss: every negative's group must contain exactly one positive")
    pos_score = torch.zeros(len(uniq), dtype=logits.dtype, device=logits.device).index_put((slot[pos],), logits[pos])
    diff = pos_score[slot[neg]] - logits[neg]
    return -F.logsigmoid(diff).sum() / max(int(neg.sum()), 1)


LOSSES = {"log": pointwise_log_loss, "bpr": bpr_loss, "squared": squared_loss}


def get_loss(name: str):
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; expected one of {sorted(LOSSES)}") from None
