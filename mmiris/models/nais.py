"""NAIS (He et al., TKDE 2018), eq. 3: FISM with a_ij = smoothed-softmax_β of an MLP over
(p_i, q_j): ``prod`` uses hᵀReLU(W(p_i⊙q_j)+b), ``concat`` hᵀReLU(W[p_i; q_j]+b).

Optional pretraining as in the NAIS paper: ``model.init_from(trained_fism)`` copies P, Q."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmiris.models import register
from mmiris.models.item_similarity import AttentiveConfig, AttentiveItemSimilarity
from mmiris.models.layers import linear, sq


@dataclass
class NAISConfig(AttentiveConfig):
    beta: float = 0.5  # smoothing exponent of the softmax denominator (NAIS paper: 0.5)


class _NAIS(AttentiveItemSimilarity):
    config: NAISConfig
    config_cls = NAISConfig
    W: nn.Linear  # the attention MLP's W, b (eq. 3)

    def regularization(self):
        return super().regularization() + self.config.reg_attention * sq(self.W.weight)


@register
class NAISProd(_NAIS):
    name = "nais_prod"

    def __init__(self, config, n_users, n_items, history=None, features=None):
        super().__init__(config, n_users, n_items, history, features)
        self.W = linear(config.emb, config.attention_size)  # W, b
        self.h = linear(config.attention_size, 1, bias=False)  # h

    def attention_inputs(self, hist, items, PH, QT):
        # W(p_i ⊙ q_j) = (W·diag(q_j)) p_i: the kernel builds W·diag(q_j) once per target
        return dict(W=self.W.weight, bias=self.W.bias)


@register
class NAISConcat(_NAIS):
    name = "nais_concat"

    def __init__(self, config, n_users, n_items, history=None, features=None):
        super().__init__(config, n_users, n_items, history, features)
        self.W = linear(2 * config.emb, config.attention_size)  # W = [W_p | W_q], b
        self.h = linear(config.attention_size, 1, bias=False)

    def attention_inputs(self, hist, items, PH, QT):
        k = self.config.emb
        # W[p_i; q_j] + b = W_p p_i + (W_q q_j + b): each side once per row, not per pair.
        # fp32 under any autocast: [k × h] products gain nothing from bf16, and lose precision.
        with torch.autocast(PH.device.type, enabled=False):
            return dict(A=PH @ self.W.weight[:, :k].t(), C=QT @ self.W.weight[:, k:].t() + self.W.bias)
