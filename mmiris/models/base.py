"""The one contract every model implements (RecBole's idea, without the dataset object).

A model is built from a typed config, the catalogue sizes, the users' training histories
(item-similarity models read them; others ignore them) and the item modalities it needs.
Training code only ever calls ``scores`` (logits for given candidates), ``regularization``
(the L2 terms of eq. 12) and, for closed-form models, ``fit``; evaluation and
recommendation call ``scores`` and ``score_all``; explanations call ``attention``.

Training objective (docs/models.md "Losses"): ``loss_fn(model.scores(b.users, b.items),
b.labels, b.mask, b.group) + model.regularization()`` where ``loss_fn`` is one of
``mmiris.models.losses`` (mean over the batch's instances) and ``regularization`` is
Σ λ·‖θ‖²_F over whole parameter matrices (NAIS's convention), so λ is relative to the MEAN
per-instance loss.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from torch import nn

from mmiris.data.modality import ItemModality
from mmiris.data.split import SplitData, UserHistory
from mmiris.typed_config import config_from_dict


@dataclass
class ModelConfig:
    """Fields shared by all models; each model subclasses it with its own (paper defaults)."""

    emb: int = 16  # embedding size k (paper §IV-D: 16 and 64)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Inverse of ``to_dict``; unknown keys are an error naming the field."""
        return config_from_dict(cls, d)


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

    def to(self, device: torch.device | str) -> Batch:
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
    needs_history: ClassVar[bool] = False  # item-similarity models read the users' histories
    score_chunk_items: ClassVar[int] = 1024  # score_all works through the catalogue in chunks
    # Models that score an item with no interactions from its content (scores_new_items): the
    # parameters with one free row per item that only the *target* side reads. Zeroed, every
    # candidate is scored as a brand-new item would be (``targets_as_new``).
    target_rows: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        config: ModelConfig,
        n_users: int,
        n_items: int,
        history: UserHistory | None = None,
        features: dict[str, ItemModality] | None = None,
    ):
        super().__init__()
        self.config, self.n_users, self.n_items = config, n_users, n_items
        self.history = history
        self.features = features or {}
        missing = [m for m in self.modalities if m not in self.features]
        if missing:
            raise ValueError(f"model {self.name} needs item features for {missing}")
        if self.needs_history and history is None:
            raise ValueError(f"model {self.name} needs the users' training histories (history=...)")
        for m in self.modalities:
            f = self.features[m]
            if f.features.shape[0] != n_items:
                raise ValueError(f"{m} features have {f.features.shape[0]} rows, expected n_items={n_items}")

    # -- what subclasses implement -------------------------------------------------------
    def scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits r̂_uj for ``items[b, t]`` of ``users[b]``: [B, T]. For item-similarity
        models the target j is excluded from u's history (eq. 5: R_u⁺ \\ {j})."""
        raise NotImplementedError

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Logits for every item in the catalogue: [B, n_items], in bounded memory
        (the catalogue is scored ``score_chunk_items`` items at a time)."""
        out = []
        for start in range(0, self.n_items, self.score_chunk_items):
            stop = min(start + self.score_chunk_items, self.n_items)
            items = torch.arange(start, stop, device=users.device).expand(len(users), -1)
            out.append(self.scores(users, items))
        return torch.cat(out, dim=1) if out else torch.zeros(len(users), 0)

    def regularization(self) -> torch.Tensor:
        """The L2 terms of eq. 12 (λ1..λ4) for the current parameters."""
        return torch.zeros((), device=self.device)

    def optimizer_groups(self) -> list[dict]:
        """The parameters in optimiser groups: ``{"params": [...], "lr_scale": s}``, each
        group's learning rate the run's times ``s`` (1 where absent). One group by default."""
        return [{"params": list(self.parameters())}]

    def fit(self, split: SplitData) -> None:
        """Closed-form models (trainable = False) compute their parameters here."""
        raise NotImplementedError(f"{self.name} is trained by gradient steps, not fit()")

    def attention(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For attention models: (history [B, L], a_ij [B, T, L], history mask [B, L])."""
        raise NotImplementedError(f"{self.name} has no attention weights")

    # -- shared ----------------------------------------------------------------------------
    def set_history(self, history: UserHistory) -> None:
        self.history = history

    @property
    def train_history(self) -> UserHistory:
        """The users' training histories, which this model needs here (``history=...``)."""
        if self.history is None:
            raise ValueError(f"model {self.name} needs the users' training histories (history=...)")
        return self.history

    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")


@contextmanager
def targets_as_new(model: Recommender) -> Iterator[None]:
    """Within the block, ``model`` scores every candidate as an item it never saw: the
    target-side free rows (``target_rows``: hybrid_iris' Q_j and b_j, VBPR's γ_j and b_j) are
    zero, so only the content path ranks them, as on the cold-item split. The rows are restored
    bit for bit after. For model selection on cold items (``TrainConfig.select_on = "cold"``)."""
    names = type(model).target_rows
    if not names:
        raise ValueError(
            f"model {model.name} has no content path for items without interactions (target_rows is empty), "
            f"so it cannot score its candidates as new items"
        )
    params = dict(model.named_parameters())
    saved = {}
    with torch.no_grad():
        for n in names:
            if n not in params:
                raise ValueError(f"model {model.name}: target row parameter {n!r} does not exist")
            saved[n] = params[n].detach().clone()
            params[n].zero_()
    try:
        yield
    finally:
        with torch.no_grad():
            for n, v in saved.items():
                params[n].copy_(v)
