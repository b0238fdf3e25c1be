"""Losses of eq. 9–12 against loops, with the documented mean reduction."""

from __future__ import annotations

import math

import pytest
import torch

from mmiris.models.losses import bpr_loss, get_loss, pointwise_log_loss, squared_loss


def _batch():
    torch.manual_seed(0)
    logits = torch.randn(3, 6, requires_grad=True)
    # row layout: positive then its negatives, groups by positive; last slots padded
    labels = torch.tensor([[1, 0, 0, 1, 0, 0], [1, 0, 0, 0, 0, 0], [1, 0, 1, 0, 0, 0]], dtype=torch.float32)
    group = torch.tensor([[7, 7, 7, 9, 9, 0], [4, 4, 4, 4, 4, 0], [1, 1, 2, 2, 2, 2]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    return logits, labels, mask, group


def test_pointwise_log_loss_is_mean_bce_over_valid():
    logits, labels, mask, group = _batch()
    terms = []
    for b in range(3):
        for t in range(6):
            if mask[b, t]:
                p = 1 / (1 + math.exp(-float(logits[b, t].detach())))
                y = float(labels[b, t])
                terms.append(-(y * math.log(p) + (1 - y) * math.log(1 - p)))
    assert math.isclose(
        float(pointwise_log_loss(logits, labels, mask, group).detach()), sum(terms) / len(terms), rel_tol=1e-5
    )


def test_squared_loss_eq9():
    logits, labels, mask, group = _batch()
    want = sum(0.5 * float(labels[b, t] - logits[b, t].detach()) ** 2 for b in range(3) for t in range(6) if mask[b, t])
    assert math.isclose(float(squared_loss(logits, labels, mask, group).detach()), want / int(mask.sum()), rel_tol=1e-5)


def test_bpr_pairs_each_negative_with_its_positive():
    logits, labels, mask, group = _batch()
    terms = []
    for b in range(3):
        for t in range(6):
            if mask[b, t] and labels[b, t] == 0:
                pos = [s for s in range(6) if mask[b, s] and labels[b, s] == 1 and group[b, s] == group[b, t]]
                assert len(pos) == 1
                d = float((logits[b, pos[0]] - logits[b, t]).detach())
                terms.append(-math.log(1 / (1 + math.exp(-d))))
    got = bpr_loss(logits, labels, mask, group)
    assert math.isclose(float(got.detach()), sum(terms) / len(terms), rel_tol=1e-5)
    got.backward()
    assert logits.grad[~mask].abs().sum() == 0


def test_bpr_rejects_unpaired_negatives():
    logits, labels, mask, group = _batch()
    group = group.clone()
    group[1, 2] = 99
    with pytest.raises(ValueError, match="exactly one positive"):
        bpr_loss(logits, labels, mask, group)


def test_get_loss_names():
    assert get_loss("log") is pointwise_log_loss
    with pytest.raises(ValueError, match="unknown loss"):
        get_loss("hinge")
