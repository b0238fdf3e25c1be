"""Shared body of the item-similarity family (FISM, NAIS, the IRIS models; eq. 2–5).

Every model here predicts r̂_uj = |R_u⁺\\{j}|^-α Σ_{i ∈ R_u⁺\\{j}} a_ij p_i·q_j (+ b_j), with
P the history-side and Q the target-side item embeddings; subclasses decide a_ij. The user's
training history comes from ``UserHistory`` and is read once per batch row for all of the
row's targets; the target j is removed from it by a mask, never by rebuilding histories.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmiris.models import attentive
from mmiris.models.base import ModelConfig, Recommender
from mmiris.models.layers import bias_vector, embedding, sq


@dataclass
class ItemSimilarityConfig(ModelConfig):
    alpha: float = 0.0  # eq. 2/5 normalisation |R_u⁺|^-α (paper §IV-D: α = 0)
    item_bias: bool = True  # b_j of eq. 1, as FISM's and NAIS's public code add to eq. 2/3
    reg_emb: float = 1e-7  # λ1 of eq. 12 on P and Q (paper gives no value; NAIS code's scale)


@dataclass
class AttentiveConfig(ItemSimilarityConfig):
    """What the attention of eq. 3–6 needs; NAIS and the IRIS models set their own β."""

    beta: float = 0.5  # smoothing exponent of the softmax denominator, eq. 3/4 (NAIS: 0.5, IRIS: 0.8)
    attention_size: int = 16  # hidden size h of the attention MLP / IRN (NAIS code's weight_size)
    reg_attention: float = 1e-7  # λ2 of eq. 12 on the attention weights (W, or W1..W4)


class ItemSimilarity(Recommender):
    config: ItemSimilarityConfig
    needs_history = True

    def __init__(self, config, n_users, n_items, history=None, features=None):
        super().__init__(config, n_users, n_items, history, features)
        self.P = embedding(n_items, config.emb)  # p_i: item as a history item
        self.Q = embedding(n_items, config.emb)  # q_j: item as a target
        self.item_bias = bias_vector(n_items) if config.item_bias else None
        self.backend = "auto"  # attentive.attentive_scores backend: "auto", "fused", "eager"

    # -- history -------------------------------------------------------------------------
    def history_of(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(item ids [B, L] padded with 0, lengths [B]) of the users' training histories."""
        hist, mask = self.train_history.padded(users.detach().cpu())
        dev = self.device
        return hist.to(dev), mask.sum(1).to(dev)

    # -- contract ------------------------------------------------------------------------
    def scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        items = items.to(self.device)
        hist, hlen = self.history_of(users)
        s = self.similarity(hist, hlen, items)
        if self.item_bias is not None:
            s = s + self.item_bias[items]
        return s

    def similarity(self, hist: torch.Tensor, hlen: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def regularization(self) -> torch.Tensor:
        return self.config.reg_emb * (sq(self.P.weight) + sq(self.Q.weight))

    @torch.no_grad()
    def init_from(self, *others: ItemSimilarity) -> None:
        """Start from another item-similarity model's P, Q and b_j (NAIS pretrains with FISM)."""
        if len(others) != 1 or not isinstance(others[0], ItemSimilarity):
            raise ValueError(
                f"{self.name} starts from one item-similarity model (FISM, NAIS), "
                f"got {', '.join(o.name for o in others) or 'none'}"
            )
        other = others[0]
        if other.P.weight.shape != self.P.weight.shape:
            raise ValueError(
                f"cannot init {self.name} (emb {self.P.weight.shape}) from {other.name} (emb {other.P.weight.shape})"
            )
        self.P.weight.copy_(other.P.weight)
        self.Q.weight.copy_(other.Q.weight)
        if self.item_bias is not None and other.item_bias is not None:
            self.item_bias.copy_(other.item_bias)


class AttentiveItemSimilarity(ItemSimilarity):
    """a_ij from an attention MLP with a smoothed softmax (eq. 3–6). Subclasses create ``h``
    (the attention's output vector, ``linear(attention_size, 1, bias=False)``) and return the
    attention's inputs: ``dict(A=[B,L,h], C=[B,T,h])`` (additive) or ``dict(W=, bias=)`` (prod)."""

    config: AttentiveConfig
    config_cls = AttentiveConfig
    h: nn.Linear  # hᵀ of eq. 3/4
    has_attention = True

    def attention_inputs(self, hist: torch.Tensor, items: torch.Tensor, PH: torch.Tensor, QT: torch.Tensor) -> dict:
        raise NotImplementedError

    def _parts(self, hist, items):
        PH, QT = self.P(hist), self.Q(items)
        return PH, QT, self.attention_inputs(hist, items, PH, QT)

    def similarity(self, hist, hlen, items):
        PH, QT, att = self._parts(hist, items)
        return attentive.attentive_scores(
            PH, QT, hist, hlen, items, self.h_vec, self.config.beta, self.config.alpha, backend=self.backend, **att
        )

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Every item for every user in one kernel call per batch of users: the catalogue is one
        target list shared by all rows (nothing of size users × items × k is built), the
        history side is prepared once. Falls back to the chunked contract path with gradients
        or where the fused kernel cannot run."""
        if torch.is_grad_enabled() or self.backend == "eager":
            return super().score_all(users)
        hist, hlen = self.history_of(users)
        items = torch.arange(self.n_items, device=hist.device)
        PH, QT, att = self._parts(hist, items[None, :])  # the catalogue as one shared target row
        Q = QT[0]
        att = {k: (v[0] if k == "C" else v) for k, v in att.items()}
        s = attentive.attentive_scores_shared(
            PH, Q, hist, hlen, items, self.h_vec, self.config.beta, self.config.alpha, **att
        )
        if s is None:
            return super().score_all(users)
        return s + self.item_bias[None, :] if self.item_bias is not None else s

    @torch.no_grad()
    def attention(self, users, items):
        items = items.to(self.device)
        hist, hlen = self.history_of(users)
        PH, QT, att = self._parts(hist, items)
        a = attentive.attention_weights(PH, QT, hist, hlen, items, self.h_vec, self.config.beta, **att)
        mask = torch.arange(hist.shape[1], device=hist.device)[None, :] < hlen[:, None]
        return hist, a, mask

    @property
    def h_vec(self) -> torch.Tensor:
        return self.h.weight[0]
