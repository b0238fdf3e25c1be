"""The one contract every model implements (RecBole's idea, without the dataset object).

A model is built from a typed config, the catalogue sizes, the users' training histories
(item-similarity models read them; others ignore them) and the item modalities it needs.
Training code only ever calls ``scores`` (logits for given candidates), ``regularization``
(the L2 terms of eq. 12) and, for closed-form models, ``fit``; evaluation and
recommendation call ``scores`` and ``score_all``; explanations call ``attention``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from torch import nn

from mmiris.data.modality import ItemModality
from mmiris.data.split import SplitData, UserHistory


@dataclass
class ModelConfig:
    """Fields shared by all models; each model subclasses it with its own (paper defaults)."""

    emb: int = 16  # embedding size k (paper §IV-D: 16 and 64)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Batch:
    """Training instances grouped by user (DESIGN.md "How it must run").

    Row b is user ``users[b]``; its targets ``items[b, :]`` are positives and their sampled
    negatives, padded to T with ``mask`` False. ``group[b, t]`` ties each negative to the
    positive it was sampled for (the positive shares the id), so BPR can pair them.
    """

    users: torch.Tensor  # long [B]
    items: torch.Tensor  # long [B, T]
    labels: torch.Tensor  # float [B, T], 1 positive / 0 negative
    mask: torch.Tensor  # bool [B, T]
    group: torch.Tensor  # long [B, T]

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(*(getattr(self, f).to(device) for f in ("users", "items", "labels", "mask", "group")))

    @property
    def n_instances(self) -> int:
        return int(self.mask.sum())


class Recommender(nn.Module):
    """Base class. Subclasses set ``name``, ``config_cls`` and ``modalities``."""

    name: ClassVar[str]
    config_cls: ClassVar[type[ModelConfig]] = ModelConfig
    modalities: ClassVar[tuple[str, ...]] = ()  # e.g. ("image", "text")
    trainable: ClassVar[bool] = True  # False: closed-form, call fit() instead of gradient steps
    has_attention: ClassVar[bool] = False

    def __init__(self, config: ModelConfig, n_users: int, n_items: int,
                 history: UserHistory | None = None, features: dict[str, ItemModality] | None = None):
        super().__init__()
        self.config, self.n_users, self.n_items = config, n_users, n_items
        self.history = history
        self.features = features or {}
        missing = [m for m in self.modalities if m not in self.features]
        if missing:
            raise ValueError(f"model {self.name} needs item features for {missing}")

    # -- what subclasses implement -------------------------------------------------------
    def scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits r̂_uj for ``items[b, t]`` of ``users[b]``: [B, T]. For item-similarity
        models the target j is excluded from u's history (eq. 5: R_u⁺ \\ {j})."""
        raise NotImplementedError

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Logits for every item in the catalogue: [B, n_items], in bounded memory."""
        items = torch.arange(self.n_items, device=users.device).expand(len(users), -1)
        return self.scores(users, items)

    def regularization(self) -> torch.Tensor:
        """The L2 terms of eq. 12 (λ1..λ4) for the current parameters."""
        return torch.zeros(())

    def fit(self, split: SplitData) -> None:
        """Closed-form models (trainable = False) compute their parameters here."""
        raise NotImplementedError(f"{self.name} is trained by gradient steps, not fit()")

    def attention(self, users: torch.Tensor, items: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For attention models: (history [B, L], a_ij [B, T, L], history mask [B, L])."""
        raise NotImplementedError(f"{self.name} has no attention weights")

    # -- shared ----------------------------------------------------------------------------
    def set_history(self, history: UserHistory) -> None:
        self.history = history
