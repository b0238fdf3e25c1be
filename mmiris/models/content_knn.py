"""Content kNN: a training-free content baseline (issue "Content where it matters").

Item i's content vector c_i is its image and text features, each centred over the items that
have that modality and L2-normalised, concatenated with weights √w and √(1−w) (w =
``image_weight``), so that c_i·c_j is a weighted mean of the two modalities' cosines. A user's
score of item j is the mean similarity of j to the user's history without j:

    r̂_uj = (1 / |R_u⁺\\{j}|) Σ_{i ∈ R_u⁺\\{j}} c_i·c_j        (0 for an empty history)

It needs no interactions of j, so it ranks brand-new items; it is what a learned multimodal
model must beat to show it adds something to plain content similarity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from mmiris.models import register
from mmiris.models.base import ModelConfig, Recommender


@dataclass
class ContentKNNConfig(ModelConfig):
    image_weight: float = 0.5  # share of the image cosine in c_i·c_j (the rest is text)


def modality_means(features: dict, modalities: tuple[str, ...]) -> list[torch.Tensor]:
    """Each modality's mean feature vector over the items that have it (zeros if none do)."""
    out = []
    for m in modalities:
        x, present = features[m].features.float(), features[m].present.bool()
        out.append(x[present].mean(0) if present.any() else torch.zeros(x.shape[1]))
    return out


def content_rows(
    xs: list[torch.Tensor], present: list[torch.Tensor], means: list[torch.Tensor], weights: list[float]
) -> torch.Tensor:
    """c_i of some items: per modality the features minus ``means``, unit length, zero where
    missing, times √weight; the modalities concatenated (hybrid_iris reuses it with the means
    saved in the model, so items added later are centred as the training catalogue was)."""
    return torch.cat(
        [
            F.normalize(x.float() - mu, dim=1) * p.float()[:, None] * w**0.5
            for x, p, mu, w in zip(xs, present, means, weights)
        ],
        dim=1,
    )


def content_vectors(features: dict, image_weight: float) -> torch.Tensor:
    """c_i for every item: per modality centred over present items, unit length, weighted."""
    ms = ("image", "text")
    return content_rows(
        [features[m].features for m in ms],
        [features[m].present for m in ms],
        modality_means(features, ms),
        [image_weight, 1.0 - image_weight],
    )


@register
class ContentKNN(Recommender):
    name = "content_knn"
    config: ContentKNNConfig
    config_cls = ContentKNNConfig
    C: torch.Tensor  # buffer: content vectors per item
    modalities = ("image", "text")
    trainable = False
    needs_history = True
    # New items (mmiris/recommend/new_items.py) are scored from their content vectors; the
    # model is rebuilt over the extended catalogue, so the centring covers the new items too.
    scores_new_items: ClassVar[bool] = True
    item_rows: ClassVar[tuple[str, ...]] = ()  # nothing learned per item

    def __init__(self, config, n_users, n_items, history=None, features=None):
        super().__init__(config, n_users, n_items, history, features)
        if not 0.0 <= config.image_weight <= 1.0:
            raise ValueError(f"content_knn: image_weight must be in [0, 1], got {config.image_weight}")
        self.register_buffer("C", content_vectors(self.features, config.image_weight), persistent=False)

    def fit(self, split=None) -> None:
        """Nothing to learn: only the histories (from ``split`` when given)."""
        if split is not None:
            self.history = split.history()

    def _history_sums(self, users: torch.Tensor):
        hist, mask = self.train_history.padded(users.detach().cpu())
        hist, mask = hist.to(self.C.device), mask.to(self.C.device)
        # Σ_i c_i over the history [B, d] as (user × item counts) @ C: never builds [B, L, d]
        x = torch.zeros(len(users), self.n_items, device=self.C.device).scatter_add_(1, hist, mask.float())
        return hist, mask, x @ self.C

    def scores(self, users, items):
        items = items.to(self.C.device)
        hist, mask, sums = self._history_sums(users)
        cj = self.C[items]  # [B, T, d]
        in_hist = ((hist[:, None, :] == items[:, :, None]) & mask[:, None, :]).any(-1)  # j ∈ R_u⁺
        total = (cj @ sums[:, :, None]).squeeze(-1) - in_hist * (cj * cj).sum(-1)  # remove j itself
        n = mask.sum(1, keepdim=True) - in_hist.long()
        return torch.where(n > 0, total / n.clamp_min(1), torch.zeros_like(total))

    def score_all(self, users):
        hist, mask, sums = self._history_sums(users)
        total = sums @ self.C.t()  # [B, n_items]
        # scatter_add: padding slots (item 0, mask 0) must not overwrite a real item 0
        in_hist = torch.zeros(total.shape, dtype=torch.long, device=total.device).scatter_add_(1, hist, mask.long()) > 0
        total = total - in_hist * (self.C * self.C).sum(1)[None, :]
        n = mask.sum(1, keepdim=True) - in_hist.long()
        return torch.where(n > 0, total / n.clamp_min(1), torch.zeros_like(total))
