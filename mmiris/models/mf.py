"""Matrix factorisation (Koren et al. 2009) as a reference: r̂_uj = p_u·q_j + b_u + b_j + b."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mmiris.models import register
from mmiris.models.base import ModelConfig, Recommender
from mmiris.models.layers import bias_vector, embedding, sq


@dataclass
class MFConfig(ModelConfig):
    reg_emb: float = 1e-6  # λ1 (eq. 12 style) on the user and item factors


@register
class MF(Recommender):
    name = "mf"
    config_cls = MFConfig

    def __init__(self, config, n_users, n_items, history=None, features=None):
        super().__init__(config, n_users, n_items, history, features)
        self.user = embedding(n_users, config.emb)
        self.item = embedding(n_items, config.emb)
        self.user_bias, self.item_bias = bias_vector(n_users), bias_vector(n_items)
        self.global_bias = torch.nn.Parameter(torch.zeros(()))

    def scores(self, users, items):
        users, items = users.to(self.device), items.to(self.device)
        pu = self.user(users)  # [B, k]
        return (
            (self.item(items) * pu[:, None, :]).sum(-1)
            + self.user_bias[users][:, None]
            + self.item_bias[items]
            + self.global_bias
        )

    def score_all(self, users):
        users = users.to(self.device)
        return (
            self.user(users) @ self.item.weight.t()
            + self.user_bias[users][:, None]
            + self.item_bias[None, :]
            + self.global_bias
        )

    def regularization(self):
        return self.config.reg_emb * (sq(self.user.weight) + sq(self.item.weight))
