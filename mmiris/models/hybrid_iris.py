"""Hybrid IRIS: Multimodal IRIS whose attention also reads the collaborative signal, and whose
item embeddings have a content part, so brand-new items can be ranked (beyond the paper).

With g_i = [v_i; t_i] the outputs of Multimodal IRIS's towers (eq. 7–8) for item i:

    p_i = P_i + U_p g_i,   q_j = Q_j + U_q g_j                       (content part of p and q)
    e_ij = hᵀ ReLU( W1 v_i + W3 t_i + W_p p_i  +  W2 v_j + W4 t_j + W_q q_j + b )
    r̂_uj = |R_u⁺\\{j}|^-α Σ_{i ∈ R_u⁺\\{j}} a_ij (p_i·q_j + γ ĉ_i·ĉ_j) + b_j,   a = smoothed softmax_β(e)

- ĉ_i is item i's content-kNN vector (mmiris/models/content_knn.py: image and text features,
  each centred and L2-normalised, weighted ½ : ½) projected on its ``content_similarity``
  leading principal directions over the catalogue, so ĉ_i·ĉ_j is (nearly) the cosine that
  content kNN averages; γ is learned (starts at 1). With uniform attention and p·q = 0 the
  model *is* content kNN on those directions, so what it learns adds to plain content
  similarity instead of having to rediscover it through 16-dimensional towers (docs/content.md:
  on ML-1M cold items content kNN keeps 0.228 of its 0.239 HR@10 on 32 directions). The
  centring means and the directions are fixed when the model is built and saved with it, so an
  item added after training is projected exactly as the training items were. It runs on the
  fused op as p̃_i = [p_i; γ ĉ_i], q̃_j = [q_j; ĉ_j] (the attention reads p_i and q_j only).
- **A learned content metric** (``content_metric``, seventh session): the two sides get their
  own projections, ĉ_i = c_i M_p for a history item and ĉ_j = c_j M_q for a target, both
  learned and both starting at the principal directions (so the model starts exactly where
  the fixed term does). The fixed cosine weighs every content direction as content kNN does;
  learned, the similarity can weigh the directions that predict co-interaction. In training a
  share ``metric_dropout`` of the content dimensions is dropped from each projection (one mask
  per side and batch, the kept ones scaled by 1/(1 − share)): without it the projections fit
  the warm items' identities and a content-only version of the term ranks cold items worse
  after a few epochs (docs/content.md). With ``metric_dropout_per="item"`` (eleventh
  session) each item in the batch gets its own masks, so one step averages over many masks
  instead of following one.
  With ``metric_heads`` = K > 1 (eleventh session) there are K pairs of projections, all
  starting at the principal directions; each training batch trains one pair, drawn at random,
  and outside training the term is their mean, γ (1/K) Σ_k (c_i M_p^k)·(c_j M_q^k) (the
  projections side by side, each scaled by K^-1/2): an ensemble inside one run. Averaging
  the new-item paths of models trained with different seeds ranks cold items better than any
  one of them (docs/content.md).
  ``reg_metric`` pulls both projections back towards the directions they start at
  (λ‖M − B‖², eighth session): unpulled they grew to 11 times their starting norm on ML-1M.

- The logit is the IRN of eq. 6 plus NAIS_concat's W[p_i; q_j] (on the hybrid p and q): the
  attention can follow the content where interactions are few and the learned factors where
  they are many. It stays additive (history part + target part), so it runs on the same
  fused attention op as NAIS_concat and the IRIS models.
- A cold item j (no training interaction) has P_j = Q_j = 0 and b_j = 0: those rows are
  zeroed when the model is built and after ``init_from`` (a cold item is never a training
  target, and a cold-item split draws no negatives from it, so they stay zero), and
  q_j = U_q g_j carries its poster and plot alone, exactly as for an item added after training
  (mmiris/recommend/new_items.py).
- **Content dropout** (beyond the paper; DropoutNet, Volkovs et al., NeurIPS 2017): in training,
  each (user, target) pair drops the target's free Q_j and b_j with probability
  ``content_dropout``, so that pair is scored as a cold item would be, through q_j = U_q g_j.
  Without it nothing teaches U_q and the towers to stand in for Q_j: they only add a
  correction to a Q_j that is always there, and a cold item's score is near random
  (docs/content.md). Evaluation and inference never drop.
- U_p and U_q start at zero: initialised from a FISM (``init_from``), the model starts with
  exactly the FISM's p and q, and learns how much content to add.
- **How a new item is ranked** (``new_items``, eighth session). A target with no learned row
  (Q_j = 0 and b_j = 0: an item without training interactions, one added after training, or
  every candidate under ``targets_as_new``) is scored outside training either by the model as
  above ("model", the default: q_j = U_q g_j) or through the content similarity term alone,
  uniformly weighted ("similarity"):

      r̂_uj = γ |R_u⁺\\{j}|^-(α+β) Σ_{i ∈ R_u⁺\\{j}} ĉ_i·ĉ_j

  which is the model's own sum with every logit e_ij equal (a_ij = n^-β) and q_j's learned
  parts absent. The attention and U_q g_j are fitted on warm items; on cold items they cost
  more than they add (docs/content.md: on ML-1M's cold-validation split this path ranks the
  cold test items at 0.2658 and 0.2558 HR@10, seeds 0 and 1, against 0.1961 for seed 0
  scoring them as the model does). Explanations for such a target rank
  the history by each item's share of that sum, γ n^-(α+β) ĉ_i·ĉ_j. Training never uses this
  path: content dropout still teaches U_q and the towers, and selecting on cold validation
  (``select_on="cold"``) then follows the path the model will rank new items with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from mmiris.models import register
from mmiris.models.content_knn import content_rows, modality_means
from mmiris.models.iris import MultimodalIRIS, MultimodalIRISConfig
from mmiris.models.layers import linear, sq


def content_directions(features: dict, modalities: tuple[str, ...], d: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per-modality means over the items that have the modality, and the ``d`` leading
    principal directions [D, d] of the catalogue's content-kNN vectors (zero columns past the
    rank: with fewer items than ``d`` the directions span every vector and ĉ·ĉ is exact)."""
    means = modality_means(features, modalities)
    M = len(modalities)
    C = content_rows(
        [features[m].features for m in modalities], [features[m].present for m in modalities], means, [1 / M] * M
    )
    _, _, Vh = torch.linalg.svd(C.double(), full_matrices=False)
    basis = Vh[:d].t().float()
    return means, torch.nn.functional.pad(basis, (0, d - basis.shape[1])).contiguous()


@dataclass
class HybridIRISConfig(MultimodalIRISConfig):
    content_embeddings: bool = True  # p_i = P_i + U_p g_i, q_j = Q_j + U_q g_j
    collaborative_attention: bool = True  # W_p p_i + W_q q_j in the attention logit
    reg_content: float = 1e-7  # L2 on U_p, U_q (the λ1 of eq. 12 applies to P, Q)
    # training only: share of (user, target) pairs whose target loses its free Q_j and b_j,
    # so the content part learns to score items that have no interactions (0 turns it off)
    content_dropout: float = 0.5
    # directions of ĉ (the content-kNN vectors' leading principal directions); 0 drops the term
    content_similarity: int = 32
    # learn the projections of ĉ, one for history items and one for targets, starting at those
    # directions (needs content_similarity > 0)
    content_metric: bool = False
    # training only: share of content dimensions dropped from each learned projection per batch
    metric_dropout: float = 0.5
    # the unit one metric-dropout mask covers: "batch" (one mask per side for the whole batch,
    # rows of M_p and M_q dropped) or "item" (one per side for each item in the batch, its
    # content dimensions dropped; over two seeds it ranked cold items 0.009 HR@10 lower, docs/content.md)
    metric_dropout_per: str = "batch"
    # learned similarity heads: each training batch trains one, drawn at random, and inference
    # averages them (their projections side by side): an ensemble inside one run (1: one head;
    # over two seeds, 2 ranked cold items 0.005 HR@10 lower than 1, docs/content.md)
    metric_heads: int = 1
    # L2 pull of the learned projections towards the directions they start at:
    # reg_metric · (‖M_p − B‖² + ‖M_q − B‖²), B the principal directions (0: off)
    reg_metric: float = 0.0
    # the learned projections' learning rate, as a multiple of the run's (Adam moves them
    # ~lr per step; on cold validation the metric peaked after 1,000–5,000 steps, docs/content.md)
    metric_lr: float = 1.0
    # how a target with no learned row (Q_j = 0, b_j = 0) is scored outside training: "model"
    # (q_j = U_q g_j under the attention) or "similarity" (γ ĉ_i·ĉ_j, uniformly weighted)
    new_items: str = "model"


NEW_ITEM_PATHS = ("model", "similarity")
METRIC_DROPOUT_UNITS = ("batch", "item")


@register
class HybridIRIS(MultimodalIRIS):
    name = "hybrid_iris"
    config: HybridIRISConfig
    config_cls = HybridIRISConfig
    # Items that arrive after training (mmiris/recommend/new_items.py): zero P, Q rows and b_j,
    # so a new item's q_j = U_q g_j comes from its poster and plot alone.
    scores_new_items: ClassVar[bool] = True
    item_rows: ClassVar[tuple[str, ...]] = ("P.weight", "Q.weight", "item_bias")  # one row per item
    target_rows: ClassVar[tuple[str, ...]] = ("Q.weight", "item_bias")  # what content dropout drops
    content_basis: torch.Tensor  # buffer [D, content_similarity]: the directions of ĉ

    @classmethod
    def new_items_refusal(cls, config: HybridIRISConfig) -> str | None:
        if not config.content_embeddings and not config.content_similarity:
            return (
                "content_embeddings and content_similarity are off, so q_j = Q_j, a learned row that is "
                "zero for a new item"
            )
        return None

    def __init__(self, config, n_users, n_items, history=None, features=None):
        super().__init__(config, n_users, n_items, history, features)
        k, h, M = config.emb, config.attention_size, len(self.modalities)
        self.content_p = self.content_q = None
        if config.content_embeddings:
            self.content_p = linear(k * M, k, bias=False)  # U_p
            self.content_q = linear(k * M, k, bias=False)  # U_q
            with torch.no_grad():
                self.content_p.weight.zero_()
                self.content_q.weight.zero_()
        self.irn_p = linear(k, h, bias=False) if config.collaborative_attention else None  # W_p
        self.irn_q = linear(k, h, bias=False) if config.collaborative_attention else None  # W_q
        if not 0.0 <= config.content_dropout < 1.0:
            raise ValueError(f"content_dropout must be in [0, 1), got {config.content_dropout}")
        self._target_keep: torch.Tensor | None = None  # this training batch's content dropout
        self.sim_scale = None
        if config.content_similarity < 0:
            raise ValueError(f"content_similarity must be >= 0, got {config.content_similarity}")
        if config.content_similarity:
            self.sim_scale = torch.nn.Parameter(torch.ones(()))  # γ
            means, basis = content_directions(self.features, self.modalities, config.content_similarity)
            for m, mu in zip(self.modalities, means):  # persistent: new items are projected alike
                self.register_buffer(f"{m}_content_mean", mu)
            self.register_buffer("content_basis", basis)
        self.metric_p = self.metric_q = None
        self.metric_heads_p = self.metric_heads_q = None
        if config.content_metric:
            if not config.content_similarity:
                raise ValueError("content_metric learns the projections of ĉ: it needs content_similarity > 0")
            if not 0.0 <= config.metric_dropout < 1.0:
                raise ValueError(f"metric_dropout must be in [0, 1), got {config.metric_dropout}")
            if config.metric_dropout_per not in METRIC_DROPOUT_UNITS:
                raise ValueError(
                    f"metric_dropout_per must be one of {METRIC_DROPOUT_UNITS}, got {config.metric_dropout_per!r}"
                )
            if config.reg_metric < 0:
                raise ValueError(f"reg_metric must be >= 0, got {config.reg_metric}")
            if not config.metric_lr > 0:
                raise ValueError(f"metric_lr must be > 0, got {config.metric_lr}")
            if config.metric_heads < 1:
                raise ValueError(f"metric_heads must be >= 1, got {config.metric_heads}")
            self.metric_p = torch.nn.Parameter(basis.clone())  # M_p (history side)
            self.metric_q = torch.nn.Parameter(basis.clone())  # M_q (target side)
            if config.metric_heads > 1:  # the further heads, all starting where the first does
                extra = basis.expand(config.metric_heads - 1, *basis.shape).clone()
                self.metric_heads_p = torch.nn.Parameter(extra.clone())
                self.metric_heads_q = torch.nn.Parameter(extra)
        if config.new_items not in NEW_ITEM_PATHS:
            raise ValueError(f"new_items must be one of {NEW_ITEM_PATHS}, got {config.new_items!r}")
        if config.new_items == "similarity" and not config.content_similarity:
            raise ValueError(
                "new_items 'similarity' ranks new items by the term γ ĉ_i·ĉ_j: it needs content_similarity > 0"
            )
        self.zero_untrained_rows()

    def content_similarity_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """ĉ for item ids [N]: [N, content_similarity] (zero blocks for missing modalities);
        with ``content_metric`` [N, 2 · content_similarity], the history side's ĉ = c M_p and
        then the target side's c M_q (in training each projection's dimensions dropped, per batch
        or, with ``metric_dropout_per="item"``, per item: each of the N rows its own masks). With
        K ``metric_heads``: in training one head, drawn per call, so [N, 2 · content_similarity];
        outside training every head's c M / √K side by side, [N, 2 · K · content_similarity]."""
        ms = self.modalities
        rows = content_rows(
            [getattr(self, f"{m}_features")[ids] for m in ms],
            [getattr(self, f"{m}_present")[ids] for m in ms],
            [getattr(self, f"{m}_content_mean") for m in ms],
            [1 / len(ms)] * len(ms),
        )
        if self.metric_p is None or self.metric_q is None:
            return rows @ self.content_basis
        Mps, Mqs = self.metric_projections()
        if not (self.training and torch.is_grad_enabled()):  # every head, averaged: [history | target]
            return rows @ torch.cat([*Mps, *Mqs], dim=1) * len(Mps) ** -0.5
        k = int(torch.randint(len(Mps), ())) if len(Mps) > 1 else 0  # this batch's head
        Mp, Mq = Mps[k], Mqs[k]
        drop = self.config.metric_dropout
        if drop and self.config.metric_dropout_per == "item":
            kp = (torch.rand(rows.shape, device=rows.device) >= drop).to(rows.dtype) / (1 - drop)
            kq = (torch.rand(rows.shape, device=rows.device) >= drop).to(rows.dtype) / (1 - drop)
            return torch.cat([(rows * kp) @ Mp, (rows * kq) @ Mq], dim=1)
        if drop:
            D = Mp.shape[0]
            Mp = Mp * ((torch.rand(D, device=Mp.device) >= drop).to(Mp.dtype) / (1 - drop))[:, None]
            Mq = Mq * ((torch.rand(D, device=Mq.device) >= drop).to(Mq.dtype) / (1 - drop))[:, None]
        return rows @ torch.cat([Mp, Mq], dim=1)

    def metric_projections(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The learned heads' projections: ([M_p of each head], [M_q of each head])."""
        assert self.metric_p is not None and self.metric_q is not None
        Mps, Mqs = [self.metric_p], [self.metric_q]
        if self.metric_heads_p is not None and self.metric_heads_q is not None:
            Mps += list(self.metric_heads_p.unbind(0))
            Mqs += list(self.metric_heads_q.unbind(0))
        return Mps, Mqs

    @torch.no_grad()
    def zero_untrained_rows(self) -> None:
        """P_j = Q_j = 0 and b_j = 0 for every item with no training interaction."""
        if self.history is None:
            return
        seen = np.zeros(self.n_items, dtype=bool)
        seen[self.history.indices] = True
        cold = torch.from_numpy(~seen).to(self.P.weight.device)
        self.P.weight[cold] = 0.0
        self.Q.weight[cold] = 0.0
        if self.item_bias is not None:
            self.item_bias[cold] = 0.0

    @torch.no_grad()
    def init_from(self, *others) -> None:
        super().init_from(*others)
        self.zero_untrained_rows()

    def scores(self, users, items):
        p = self.config.content_dropout
        if p == 0.0 or self.content_q is None or not (self.training and torch.is_grad_enabled()):
            return super().scores(users, items)
        items = items.to(self.device)
        hist, hlen = self.history_of(users)
        keep = (torch.rand(items.shape, device=items.device) >= p).to(self.Q.weight.dtype)
        self._target_keep = keep
        try:
            s = self.similarity(hist, hlen, items)
        finally:
            self._target_keep = None
        if self.item_bias is not None:
            s = s + self.item_bias[items] * keep
        return s

    # -- new items through the similarity term (``new_items="similarity"``) -------------------
    def _similarity_path(self) -> bool:
        return self.config.new_items == "similarity" and not (self.training and torch.is_grad_enabled())

    def untrained(self, items: torch.Tensor) -> torch.Tensor:
        """Whether each target has no learned row (Q_j = 0 and b_j = 0), shaped like ``items``."""
        none = (self.Q.weight == 0).all(dim=1)
        if self.item_bias is not None:
            none = none & (self.item_bias == 0)
        return none[items]

    def _rank_new_items(self, hist, hlen, items, s):
        """``s`` [B, T] with the targets ``items`` ([B, T], or [T] shared by every row) that have
        no learned row rescored through the similarity path (their b_j is 0, so a bias added
        after changes nothing)."""
        if not self._similarity_path():
            return s
        new = self.untrained(items)
        if not bool(new.any()):
            return s
        return torch.where(new, self.similarity_path(hist, hlen, items).to(s.dtype), s)

    def similarity(self, hist, hlen, items):
        return self._rank_new_items(hist, hlen, items, super().similarity(hist, hlen, items))

    def _path_terms(self, hist, hlen, items):
        """For ``similarity_path`` and explanations, d being one side's width of ĉ (``_side_width``):
        (γ n^-(α+β) [B, T]; the history side's ĉ of the history [B, L, d], zero on padding; the target side's ĉ of the targets [B, T, d], or
        [T, d] when ``items`` [T] is shared by every row; the history side's ĉ of the targets,
        for j's own term; whether j is in the history [B, T])."""
        c = self.config
        B, L = hist.shape
        cached = getattr(self, "_tables", None)
        if cached is not None and not torch.is_grad_enabled():  # evaluation: the catalogue's ĉ
            S_tab = cached[4]
            d = self._side_width(S_tab)
            S_items = S_tab[items]
            Sh, St, Sj = S_tab[hist][..., :d], S_items[..., -d:], S_items[..., :d]
        else:
            uniq, inv = torch.unique(torch.cat([hist.reshape(-1), items.reshape(-1)]), return_inverse=True)
            with torch.autocast(uniq.device.type, enabled=False):
                S = self.content_similarity_vectors(uniq)
            d = self._side_width(S)
            ih, it = inv[: B * L], inv[B * L :]
            Sh = S[ih, :d].view(B, L, d)
            St, Sj = S[it, -d:].view(*items.shape, d), S[it, :d].view(*items.shape, d)
        valid = torch.arange(L, device=hist.device)[None, :] < hlen[:, None]
        seen = torch.zeros(B, self.n_items + 1, dtype=torch.bool, device=hist.device)
        seen.scatter_(1, hist.masked_fill(~valid, self.n_items), True)
        member = seen[:, items] if items.dim() == 1 else seen.gather(1, items)  # j ∈ R_u⁺
        n = hlen[:, None].to(torch.float32) - member.to(torch.float32)
        scale = torch.where(n > 0, n.clamp_min(1).pow(-(c.alpha + c.beta)), torch.zeros_like(n))
        return self.sim_scale * scale, Sh * valid[..., None], St, Sj, member

    def similarity_path(self, hist: torch.Tensor, hlen: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """r̂_uj = γ n^-(α+β) Σ_{i ∈ R_u⁺\\{j}} ĉ_i·ĉ_j for targets ``items`` [B, T] (or [T],
        the same for every row): [B, T]. Σ_i ĉ_i is summed once per row, j's own term taken out."""
        scale, Sh, St, Sj, member = self._path_terms(hist, hlen, items)
        total = Sh.sum(1)  # [B, d]
        if items.dim() == 1:
            raw = total @ St.t() - member * (Sj * St).sum(-1)[None, :]
        else:
            raw = (total[:, None, :] * St).sum(-1) - member * (Sj * St).sum(-1)
        return scale * raw

    def score_all(self, users):
        # The fused shared-target kernel of score_all does not go through ``similarity``, so the
        # new items are rescored here (where it fell back to chunks of ``scores`` they already
        # were, and rescoring gives the same values).
        with self.cached_items():
            s = super().score_all(users)
            if not self._similarity_path():
                return s
            hist, hlen = self.history_of(users)
            return self._rank_new_items(hist, hlen, torch.arange(self.n_items, device=hist.device), s)

    @torch.no_grad()
    def attention(self, users, items):
        """a_ij; for a target the similarity path ranks, each history item's share of its score,
        γ n^-(α+β) ĉ_i·ĉ_j (−inf on the target itself, which it never explains)."""
        hist, a, mask = super().attention(users, items)
        if not self._similarity_path():
            return hist, a, mask
        items = items.to(self.device)
        new = self.untrained(items)
        if not bool(new.any()):
            return hist, a, mask
        hlen = mask.sum(1)
        scale, Sh, St, _, _ = self._path_terms(hist, hlen, items)
        share = scale[..., None] * (St @ Sh.transpose(1, 2))  # [B, T, L]
        share = share.masked_fill(hist[:, None, :] == items[:, :, None], float("-inf"))
        return hist, torch.where(new[..., None], share.to(a.dtype), a), mask

    def item_tables(self, ids):
        """(A [N, h], C [N, h], content part of p [N, k], of q [N, k], ĉ [N, d]; d = 0 without the term,
        2 · content_similarity with ``content_metric``, 2 · K · content_similarity outside
        training with K ``metric_heads``) per item."""
        vecs = self.item_vectors(ids)
        A, C = self.irn_tables(vecs)
        with torch.autocast(ids.device.type, enabled=False):
            chat = (
                self.content_similarity_vectors(ids)
                if self.sim_scale is not None
                else torch.zeros(len(ids), 0, device=A.device)
            )
            if self.content_p is None:
                zero = torch.zeros(len(ids), self.config.emb, device=A.device)
                return A, C, zero, zero, chat
            k = self.config.emb
            g = torch.cat([vecs[m].float() for m in self.modalities], dim=1)
            pq = g @ torch.cat([self.content_p.weight, self.content_q.weight], dim=0).t()  # one GEMM
        return A, C, pq[:, :k], pq[:, k:], chat

    def _parts(self, hist, items):
        B, L = hist.shape
        cached = getattr(self, "_tables", None)  # evaluation: the catalogue's tables (cached_items)
        if cached is not None and not torch.is_grad_enabled():
            A_tab, C_tab, Pc_tab, Qc_tab, S_tab = cached
            A, C, Pc, Qc = A_tab[hist], C_tab[items], Pc_tab[hist], Qc_tab[items]
            Sh, St = S_tab[hist], S_tab[items]
        else:
            (A_tab, C_tab, Pc_tab, Qc_tab, S_tab), inv = self.batch_tables(hist, items)
            ih, it = inv[: B * L], inv[B * L :]
            A, C = A_tab[ih].view(B, L, -1), C_tab[it].view(*items.shape, -1)
            Pc, Qc = Pc_tab[ih].view(B, L, -1), Qc_tab[it].view(*items.shape, -1)
            Sh, St = S_tab[ih].view(B, L, -1), S_tab[it].view(*items.shape, -1)
        Q = self.Q(items)
        if self._target_keep is not None:  # content dropout (training): q_j = U_q g_j for dropped pairs
            Q = Q * self._target_keep[..., None]
        PH, QT = self.P(hist) + Pc, Q + Qc
        if self.irn_p is not None:
            A = A + self.irn_p(PH)
            C = C + self.irn_q(QT)
        if self.sim_scale is not None:  # p̃_i·q̃_j = p_i·q_j + γ ĉ_i·ĉ_j
            if self.metric_p is not None:  # the history side's ĉ, then the target side's
                d = self._side_width(Sh)
                Sh, St = Sh[..., :d], St[..., d:]
            PH = torch.cat([PH, self.sim_scale * Sh], dim=-1)
            QT = torch.cat([QT, St], dim=-1)
        return PH, QT, dict(A=A, C=C)

    def _side_width(self, S: torch.Tensor) -> int:
        """Columns of one side in ĉ vectors ``S`` (the learned metric's hold the history side,
        then the target side; the fixed term's are both)."""
        return S.shape[-1] // 2 if self.metric_p is not None else S.shape[-1]

    def optimizer_groups(self) -> list[dict]:
        """With ``content_metric`` and ``metric_lr`` ≠ 1, M_p and M_q in a group of their own."""
        if self.metric_p is None or self.metric_q is None or self.config.metric_lr == 1.0:
            return super().optimizer_groups()
        own = [self.metric_p, self.metric_q] + [m for m in (self.metric_heads_p, self.metric_heads_q) if m is not None]
        metric = {id(m) for m in own}
        return [
            {"params": [p for p in self.parameters() if id(p) not in metric]},
            {"params": own, "lr_scale": self.config.metric_lr},
        ]

    def regularization(self):
        c = self.config
        r = super().regularization()
        if self.content_p is not None:
            r = r + c.reg_content * (sq(self.content_p.weight) + sq(self.content_q.weight))
        if self.irn_p is not None:
            r = r + c.reg_attention * (sq(self.irn_p.weight) + sq(self.irn_q.weight))
        if self.metric_p is not None and self.metric_q is not None and c.reg_metric:
            B = self.content_basis
            Mps, Mqs = self.metric_projections()
            r = r + c.reg_metric * sum(sq(Mp - B) + sq(Mq - B) for Mp, Mq in zip(Mps, Mqs))
        return r
