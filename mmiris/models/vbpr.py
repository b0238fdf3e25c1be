"""VBPR (He & McAuley, AAAI 2016), trained with the pointwise log loss as the paper modified it:
r̂_uj = b + b_u + b_j + γ_u·γ_j + θ_u·(E f_j) + β'·f_j, f_j the pretrained image feature
(zero when the item has no image)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from mmiris.models import register
from mmiris.models.base import ModelConfig, Recommender
from mmiris.models.layers import bias_vector, embedding, linear, sq


@dataclass
class VBPRConfig(ModelConfig):
    visual_emb: int | None = None  # size of θ_u and E f_j (None: same as emb)
    reg_emb: float = 1e-6  # λ on γ_u, γ_j, θ_u
    reg_visual: float = 1e-6  # λ on E and β'


@register
class VBPR(Recommender):
    name = "vbpr"
    config: VBPRConfig
    config_cls = VBPRConfig
    image_features: torch.Tensor  # buffer
    modalities = ("image",)
    # A new item (mmiris/recommend/new_items.py): γ_j = 0, b_j = 0; θ_u·(E f_j) + β'·f_j score it.
    scores_new_items: ClassVar[bool] = True
    item_rows: ClassVar[tuple[str, ...]] = ("gamma_item.weight", "item_bias")  # one row per item
    target_rows: ClassVar[tuple[str, ...]] = item_rows  # every free item row is on the target side

    def __init__(self, config, n_users, n_items, history=None, features=None):
        super().__init__(config, n_users, n_items, history, features)
        kv = config.visual_emb or config.emb
        self.register_buffer("image_features", self.features["image"].features.float(), persistent=False)
        self.gamma_user, self.gamma_item = embedding(n_users, config.emb), embedding(n_items, config.emb)
        self.theta_user = embedding(n_users, kv)
        self.E = linear(self.features["image"].dim, kv, bias=False)
        self.visual_bias = linear(self.features["image"].dim, 1, bias=False)  # β'
        self.user_bias, self.item_bias = bias_vector(n_users), bias_vector(n_items)
        self.global_bias = torch.nn.Parameter(torch.zeros(()))

    def _item_side(self, ids: torch.Tensor):
        f = self.image_features[ids]
        return self.E(f), self.visual_bias(f)[..., 0]

    def scores(self, users, items):
        users, items = users.to(self.device), items.to(self.device)
        uniq, inv = torch.unique(items, return_inverse=True)  # project each distinct item once
        ef, vb = self._item_side(uniq)
        ef, vb = ef[inv], vb[inv]
        return (
            (self.gamma_item(items) * self.gamma_user(users)[:, None]).sum(-1)
            + (ef * self.theta_user(users)[:, None]).sum(-1)
            + vb
            + self.user_bias[users][:, None]
            + self.item_bias[items]
            + self.global_bias
        )

    def score_all(self, users):
        users = users.to(self.device)
        ef, vb = self._item_side(torch.arange(self.n_items, device=self.device))
        return (
            self.gamma_user(users) @ self.gamma_item.weight.t()
            + self.theta_user(users) @ ef.t()
            + vb[None]
            + self.user_bias[users][:, None]
            + self.item_bias[None]
            + self.global_bias
        )

    def regularization(self):
        c = self.config
        return c.reg_emb * (
            sq(self.gamma_user.weight) + sq(self.gamma_item.weight) + sq(self.theta_user.weight)
        ) + c.reg_visual * (sq(self.E.weight) + sq(self.visual_bias.weight))
