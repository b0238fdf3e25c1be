"""ItemPop: every user gets the items ranked by training popularity (the floor any model must clear)."""

from __future__ import annotations

import numpy as np
import torch

from mmiris.models import register
from mmiris.models.base import ModelConfig, Recommender


@register
class ItemPop(Recommender):
    name = "itempop"
    config_cls = ModelConfig
    popularity: torch.Tensor  # buffer
    trainable = False

    def __init__(self, config, n_users, n_items, history=None, features=None):
        super().__init__(config, n_users, n_items, history, features)
        self.register_buffer("popularity", torch.zeros(n_items))
        if history is not None:
            self._count(history.indices)

    def _count(self, items: np.ndarray) -> None:
        counts = np.bincount(np.asarray(items, dtype=np.int64), minlength=self.n_items)[: self.n_items]
        self.popularity.copy_(torch.from_numpy(np.log1p(counts).astype(np.float32)))

    def fit(self, split) -> None:
        """Score = log(1 + number of training interactions of the item)."""
        self._count(split.train_items)

    def scores(self, users, items):
        return self.popularity[items.to(self.popularity.device)]

    def score_all(self, users):
        return self.popularity[None, :].expand(len(users), -1).clone()
