"""Batch top-N recommendation with explanations, vectorised over users.

Users are processed in batches (sorted by history length so item-similarity models pad
little); each batch is scored over the whole catalogue with ``model.score_all``, consumed
items are masked out, the best N are kept (``torch.topk``), and for attention models their
top-k historical items come from one ``model.attention`` call on the [B, N] targets.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from mmiris.data.split import UserHistory
from mmiris.models.base import Recommender
from mmiris.progress import Progress
from mmiris.recommend.explain import explain

log = logging.getLogger("mmiris.recommend")

EXPLANATION_TYPE = pa.struct([pa.field("item_id", pa.int64()), pa.field("relevance", pa.float32())])


@dataclass
class TopN:
    """Recommendations as arrays. Missing slots (fewer unseen items than N) hold item -1."""

    users: np.ndarray  # int64 [U]
    items: np.ndarray  # int64 [U, N]
    scores: np.ndarray  # float32 [U, N], σ(r̂_uj)
    explain_items: np.ndarray | None  # int64 [U, N, k], -1 past the history; None: no attention
    explain_relevance: np.ndarray | None  # float32 [U, N, k], a_ij

    def to_table(self) -> pa.Table:
        """One row per (user, rank), in the ``recommendations`` contract's columns."""
        U, N = self.items.shape
        valid = self.items >= 0
        user_col = np.repeat(self.users, N).reshape(U, N)[valid]
        rank_col = np.broadcast_to(np.arange(1, N + 1, dtype=np.int32), (U, N))[valid]
        cols = {
            "user_id": pa.array(user_col, pa.int64()),
            "rank": pa.array(rank_col, pa.int32()),
            "item_id": pa.array(self.items[valid], pa.int64()),
            "score": pa.array(self.scores[valid].astype(np.float32), pa.float32()),
        }
        n = int(valid.sum())
        if self.explain_items is None or self.explain_relevance is None:
            cols["explanations"] = pa.nulls(n, pa.list_(EXPLANATION_TYPE))
        else:
            ex_items = self.explain_items[valid]  # [n, k]
            ex_rel = self.explain_relevance[valid]
            keep = ex_items >= 0
            offsets = np.zeros(n + 1, dtype=np.int32)
            np.cumsum(keep.sum(1), out=offsets[1:])
            structs = pa.StructArray.from_arrays(
                [pa.array(ex_items[keep], pa.int64()), pa.array(ex_rel[keep].astype(np.float32), pa.float32())],
                fields=list(EXPLANATION_TYPE),
            )
            cols["explanations"] = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), structs)
        return pa.table(cols)


def consumed_history(n_users: int, n_items: int, *pairs: tuple[np.ndarray, np.ndarray]) -> UserHistory:
    """Everything each user is known to have consumed (train, valid and test items)."""
    users = np.concatenate([np.asarray(u, dtype=np.int64) for u, _ in pairs])
    items = np.concatenate([np.asarray(i, dtype=np.int64) for _, i in pairs])
    key = np.unique(users * n_items + items)  # de-duplicate
    return UserHistory.from_pairs(key // n_items, key % n_items, n_users, n_items)


@torch.inference_mode()
def recommend_top_n(
    model: Recommender,
    consumed: UserHistory,
    users: np.ndarray | None = None,
    top_n: int = 10,
    explain_k: int = 3,
    batch_users: int = 256,
) -> TopN:
    """Top-``top_n`` unseen items for each of ``users`` (default: all), with the top
    ``explain_k`` historical items per recommendation for attention models."""
    model.eval()
    users = np.arange(model.n_users, dtype=np.int64) if users is None else np.asarray(users, dtype=np.int64)
    if len(users) and (users.min() < 0 or users.max() >= model.n_users):
        bad = users[(users < 0) | (users >= model.n_users)][0]
        raise ValueError(f"user {bad} outside 0..{model.n_users - 1}")
    n_items = model.n_items
    N = min(top_n, n_items)
    with_expl = bool(model.has_attention) and explain_k > 0
    out_items = np.full((len(users), N), -1, dtype=np.int64)
    out_scores = np.zeros((len(users), N), dtype=np.float32)
    ex_items = np.full((len(users), N, explain_k if with_expl else 0), -1, dtype=np.int64)
    ex_rel = np.full((len(users), N, explain_k if with_expl else 0), np.nan, dtype=np.float32)

    # Similar history lengths in a batch: item-similarity models pad to the longest one.
    hist = model.history if model.history is not None else consumed
    order = np.argsort(hist.lengths(users), kind="stable")
    device = model.device
    with Progress(len(users), "recommend", log, unit="users") as progress:
        for start in range(0, len(users), batch_users):
            rows = order[start : start + batch_users]
            batch = users[rows]
            u = torch.from_numpy(batch).to(device)
            logits = model.score_all(u).float()  # [B, n_items]
            seen = _seen_mask(consumed, batch, n_items).to(device)
            logits = logits.masked_fill(seen, float("-inf"))
            top, idx = logits.topk(N, dim=1)
            ok = torch.isfinite(top)
            out_items[rows] = idx.masked_fill(~ok, -1).cpu().numpy()
            out_scores[rows] = torch.sigmoid(top).masked_fill(~ok, 0.0).cpu().numpy()
            if with_expl:
                e_items, e_rel = explain(model, u, idx, explain_k)
                ex_items[rows] = e_items.cpu().numpy()
                ex_rel[rows] = e_rel.cpu().numpy()
            progress.update(len(batch))
    return TopN(users, out_items, out_scores, ex_items if with_expl else None, ex_rel if with_expl else None)


@torch.inference_mode()
def recommend_among(
    model: Recommender,
    candidates: np.ndarray,
    users: np.ndarray | None = None,
    top_n: int = 10,
    explain_k: int = 3,
    batch_users: int = 256,
    blend: Sequence[tuple[Recommender, float]] = (),
) -> TopN:
    """Top-``top_n`` of ``candidates`` (item ids of ``model``, e.g. the new items of an extended
    catalogue, which no user has consumed) for each of ``users`` (default: all), scored with
    ``model.scores`` on ``score_chunk_items`` candidates at a time, with the top ``explain_k``
    historical items per recommendation for attention models.

    ``blend=[(other, share), ...]`` ranks by (1 − Σ shares)·z_model + Σ share·z_other instead,
    z being a model's logits standardised over the user's candidates (``standardise_rows``):
    the score blend of benchmarks/cold_blend.py (content kNN) and of
    benchmarks/new_item_probes.py (an ensemble of models). Scores stay ``model``'s σ(r̂),
    explanations its own."""
    blend = list(blend)
    shares = [share for _, share in blend]
    if any(not 0.0 <= share <= 1.0 for share in shares) or sum(shares) > 1.0 + 1e-9:
        raise ValueError(f"blend shares must be in [0, 1] and sum to at most 1, got {shares}")
    own = 1.0 - sum(shares)
    model.eval()
    for other, _ in blend:
        other.eval()
    users = np.arange(model.n_users, dtype=np.int64) if users is None else np.asarray(users, dtype=np.int64)
    cands = torch.as_tensor(np.asarray(candidates, dtype=np.int64))
    N = min(top_n, len(cands))
    with_expl = bool(model.has_attention) and explain_k > 0
    k = explain_k if with_expl else 0
    out_items = np.full((len(users), N), -1, dtype=np.int64)
    out_scores = np.zeros((len(users), N), dtype=np.float32)
    ex_items = np.full((len(users), N, k), -1, dtype=np.int64)
    ex_rel = np.full((len(users), N, k), np.nan, dtype=np.float32)
    hist = model.history
    order = np.argsort(hist.lengths(users), kind="stable") if hist is not None else np.arange(len(users))
    device = model.device
    cands = cands.to(device)
    with Progress(len(users), "recommend new items", log, unit="users") as progress:
        for start in range(0, len(users), batch_users):
            rows = order[start : start + batch_users]
            u = torch.from_numpy(users[rows]).to(device)
            logits = _all_scores(model, u, cands)
            if not blend:
                top, pos = logits.topk(N, dim=1)
            else:
                mixed = own * standardise_rows(logits)
                for other, share in blend:
                    z = standardise_rows(_all_scores(other, u.to(other.device), cands.to(other.device)).to(device))
                    mixed = mixed + share * z
                pos = mixed.topk(N, dim=1).indices
                top = logits.gather(1, pos)
            idx = cands[pos]
            out_items[rows] = idx.cpu().numpy()
            out_scores[rows] = torch.sigmoid(top).cpu().numpy()
            if with_expl:
                e_items, e_rel = explain(model, u, idx, explain_k)
                ex_items[rows] = e_items.cpu().numpy()
                ex_rel[rows] = e_rel.cpu().numpy()
            progress.update(len(rows))
    return TopN(users, out_items, out_scores, ex_items if with_expl else None, ex_rel if with_expl else None)


def _all_scores(model: Recommender, u: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
    """``model``'s logits of every candidate for users ``u``: [len(u), len(cands)], float32."""
    step = model.score_chunk_items
    return torch.cat(
        [model.scores(u, cands[c : c + step].expand(len(u), -1)).float() for c in range(0, len(cands), step)], dim=1
    )


def standardise_rows(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Each row minus its mean, over its (population) std, both over the row's entries where
    ``mask`` is True (default: all); a row whose counted values are all equal becomes zeros.
    Monotone per row, so a model's own ranking is unchanged. The blend of ``recommend_among``
    and of benchmarks/cold_blend.py, float64."""
    x = x.double()
    m = torch.ones_like(x, dtype=torch.bool) if mask is None else mask
    n = m.sum(dim=1, keepdim=True)
    mean = torch.where(m, x, 0.0).sum(dim=1, keepdim=True) / n
    std = (torch.where(m, (x - mean) ** 2, 0.0).sum(dim=1, keepdim=True) / n).sqrt()
    return torch.where(std > 0, (x - mean) / torch.where(std > 0, std, torch.ones_like(std)), torch.zeros_like(x))


def _seen_mask(consumed: UserHistory, users: np.ndarray, n_items: int) -> torch.Tensor:
    starts, lens = consumed.indptr[users], consumed.lengths(users)
    rows = np.repeat(np.arange(len(users)), lens)
    cols = consumed.indices[np.repeat(starts, lens) + (np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens))]
    mask = torch.zeros(len(users), n_items, dtype=torch.bool)
    mask[torch.from_numpy(rows), torch.from_numpy(cols)] = True
    return mask
