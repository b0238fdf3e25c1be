"""EASE (Steck, WWW 2019): closed-form item-item weights B = I − P·diag(1/diag(P)),
P = (XᵀX + λI)⁻¹, diag(B) = 0; r̂_u = x_u B. A dense n_items² matrix (3,706² floats ≈ 55 MB
on ML-1M; solved in float64 in a few seconds)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mmiris.data.split import UserHistory
from mmiris.models import register
from mmiris.models.base import ModelConfig, Recommender


@dataclass
class EASEConfig(ModelConfig):
    l2: float = 500.0  # λ of EASE; ~500 is the usual value for ML-1M (Steck 2019 tunes per data set)


@register
class EASE(Recommender):
    name = "ease"
    config: EASEConfig
    config_cls = EASEConfig
    B: torch.Tensor  # buffer: the item-item weights
    trainable = False
    needs_history = True

    def __init__(self, config, n_users, n_items, history=None, features=None):
        super().__init__(config, n_users, n_items, history, features)
        self.register_buffer("B", torch.zeros(n_items, n_items))

    @torch.no_grad()
    def fit(self, split=None) -> None:
        """Solve for B from the training histories (``split`` gives them when not set yet)."""
        if split is not None:
            self.history = split.history()
        self.B.copy_(ease_weights(self.train_history, self.config.l2).to(self.B))

    def _x(self, users: torch.Tensor) -> torch.Tensor:
        hist, mask = self.train_history.padded(users.detach().cpu())
        x = torch.zeros(len(users), self.n_items)
        x.scatter_add_(1, hist, mask.float()).clamp_(max=1.0)  # padding adds 0
        return x.to(self.B.device)

    def score_all(self, users):
        return self._x(users) @ self.B

    def scores(self, users, items):
        # diag(B) = 0, so an item never scores itself: no history exclusion needed
        return self.score_all(users).gather(1, items.to(self.B.device))


def ease_weights(history: UserHistory, l2: float, users_per_chunk: int = 2048) -> torch.Tensor:
    """B of EASE from the binary user×item matrix X, built a chunk of users at a time."""
    n = history.n_items
    G = torch.zeros(n, n, dtype=torch.float64)
    for u0 in range(0, history.n_users, users_per_chunk):
        users = torch.arange(u0, min(u0 + users_per_chunk, history.n_users))
        hist, mask = history.padded(users)
        X = torch.zeros(len(users), n, dtype=torch.float64).scatter_add_(1, hist, mask.double()).clamp_(max=1.0)
        G += X.t() @ X
    G += l2 * torch.eye(n, dtype=torch.float64)
    P = torch.linalg.inv(G)
    B = -P / torch.diagonal(P)[None, :]
    B.fill_diagonal_(0.0)
    return B.float()
