"""The two evaluation protocols, batched over users.

- ``sampled_ranks``: the paper's protocol (§IV-B): the held-out item against its stored
  negatives (99 on ML-1M). A negative equal to the held-out item, or repeated in the same
  row, is counted once and never against the positive — the NCF evaluation code collapses
  them the same way (its candidates are a dict); ML-1M's negatives file has 156 such users.
- ``full_ranks``: against every item the user never interacted with in training (train
  items, and any ``also_exclude`` items such as the validation item, are removed; the
  held-out item always stays a candidate).

Users are processed sorted by history length so a batch pads little, and a batch holds at
most ``pair_budget`` (user, candidate, history item) triples for item-similarity models.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from mmiris.data.split import UserHistory
from mmiris.eval.metrics import KS, metric_sums, metrics_from_ranks, positive_ranks
from mmiris.models.base import Recommender

PAIR_BUDGET = 1 << 22  # user × candidate × history triples per scoring batch


def _item_cache(model: Recommender):
    """The model's per-item precomputation for a whole evaluation (IRIS: towers and IRN
    projections of the catalogue, once instead of once per batch), if it has one."""
    cached = getattr(model, "cached_items", None)
    return cached() if cached is not None else nullcontext()


@dataclass
class RankResult:
    """Per user: the held-out item, its 0-based rank (ties pessimistic) and candidate count."""

    protocol: str
    users: np.ndarray
    items: np.ndarray
    ranks: np.ndarray
    candidates: np.ndarray
    dropped_negatives: int = 0  # sampled: negatives equal to the positive or repeated

    def metrics(self, ks=KS) -> dict[str, float]:
        return metrics_from_ranks(self.ranks, ks)

    def sums(self, ks=KS) -> torch.Tensor:
        return metric_sums(self.ranks, ks)


def _batches(lengths: np.ndarray, width: int, budget: int, max_users: int) -> list[np.ndarray]:
    """Split users (indices into ``lengths``) into batches sorted by history length, each with
    at most ``budget`` user × ``width`` × max-history triples and ``max_users`` users."""
    order = np.argsort(lengths, kind="stable")
    lens = np.maximum(lengths[order], 1).astype(np.int64)
    out, start, n = [], 0, len(order)
    while start < n:
        # lens is non-decreasing, so cost(m) = m * width * lens[start + m - 1] is increasing.
        cost = np.arange(1, n - start + 1, dtype=np.int64) * width * lens[start:]
        m = int(np.searchsorted(cost, budget, side="right"))
        m = min(max(m, 1), max_users)
        out.append(order[start : start + m])
        start += m
    return out


def _dedupe_negatives(items: np.ndarray, negatives: np.ndarray) -> tuple[np.ndarray, int]:
    """Mask [U, C] of negatives that count: not the positive, first occurrence in the row."""
    valid = negatives != items[:, None]
    srt = np.sort(negatives, axis=1)
    order = np.argsort(negatives, axis=1, kind="stable")
    dup_sorted = np.zeros_like(srt, dtype=bool)
    dup_sorted[:, 1:] = srt[:, 1:] == srt[:, :-1]
    dup = np.zeros_like(dup_sorted)
    np.put_along_axis(dup, order, dup_sorted, axis=1)
    valid &= ~dup
    return valid, int((~valid).sum())


@dataclass
class CaseScores:
    """Per case: the scores of its candidates (column 0 the held-out item, then its negatives)
    and which negatives count (``_dedupe_negatives``)."""

    users: np.ndarray
    items: np.ndarray
    scores: np.ndarray  # float32 [n, 1 + n_neg]
    counted: np.ndarray  # bool [n, n_neg]
    dropped_negatives: int

    def ranks(self, scores: np.ndarray | None = None) -> np.ndarray:
        """0-based rank of the held-out item under ``scores`` (default: the model's), ties
        pessimistic: any per-case score matrix of the same shape can be ranked the same way."""
        s = torch.from_numpy(self.scores if scores is None else np.asarray(scores, np.float32))
        return positive_ranks(s[:, 0], s[:, 1:], torch.from_numpy(self.counted)).numpy()


@torch.no_grad()
def sampled_scores(
    model: Recommender,
    users: np.ndarray,
    items: np.ndarray,
    negatives: np.ndarray,
    device: torch.device | str = "cpu",
    pair_budget: int = PAIR_BUDGET,
    max_users: int = 4096,
) -> CaseScores:
    """``model.scores`` of each case's ``items[u]`` and ``negatives[u, :]``, batched like the
    evaluation (for analyses that combine or compare scores before ranking)."""
    users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
    negatives = np.asarray(negatives, np.int64)
    negatives = negatives[:, None] if negatives.ndim == 1 else negatives
    counted, dropped = _dedupe_negatives(items, negatives)
    cands = np.concatenate([items[:, None], negatives], axis=1)
    lengths = model.history.lengths(users) if model.history is not None else np.ones(len(users), np.int64)
    out = np.zeros(cands.shape, np.float32)
    was_training = model.training
    model.eval()
    with _item_cache(model):
        for idx in _batches(lengths, cands.shape[1], pair_budget, max_users):
            u = torch.from_numpy(users[idx]).to(device)
            out[idx] = model.scores(u, torch.from_numpy(cands[idx]).to(device)).float().cpu().numpy()
    model.train(was_training)
    return CaseScores(users, items, out, counted, dropped)


def sampled_ranks(
    model: Recommender,
    users: np.ndarray,
    items: np.ndarray,
    negatives: np.ndarray,
    device: torch.device | str = "cpu",
    pair_budget: int = PAIR_BUDGET,
    max_users: int = 4096,
) -> RankResult:
    """Rank each ``items[u]`` against ``negatives[u, :]`` with ``model.scores``."""
    cs = sampled_scores(model, users, items, negatives, device, pair_budget, max_users)
    return RankResult("sampled", cs.users, cs.items, cs.ranks(), 1 + cs.counted.sum(axis=1), cs.dropped_negatives)


@torch.no_grad()
def full_ranks(
    model: Recommender,
    users: np.ndarray,
    items: np.ndarray,
    exclude: UserHistory,
    also_exclude: np.ndarray | None = None,
    device: torch.device | str = "cpu",
    batch_users: int = 256,
) -> RankResult:
    """Rank each ``items[u]`` against all items except ``exclude``'s items of that user (its
    training history) and ``also_exclude[u]`` (e.g. the validation item; -1 = none)."""
    users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
    n_items = model.n_items
    ranks = np.zeros(len(users), np.int64)
    cand_counts = np.zeros(len(users), np.int64)
    lengths = exclude.lengths(users)
    was_training = model.training
    model.eval()
    for idx in _batches(lengths, 1, 1 << 62, batch_users):
        b = len(idx)
        u = users[idx]
        cand = np.ones((b, n_items), dtype=bool)
        starts, lens = exclude.indptr[u], exclude.lengths(u)
        rows = np.repeat(np.arange(b), lens)
        cols = exclude.indices[
            np.repeat(starts, lens) + (np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens))
        ]
        cand[rows, cols] = False
        if also_exclude is not None:
            extra = np.asarray(also_exclude, np.int64)[idx]
            ok = extra >= 0
            cand[np.arange(b)[ok], extra[ok]] = False
        pos_items = items[idx]
        cand[np.arange(b), pos_items] = False  # compared separately, always a candidate
        s = model.score_all(torch.from_numpy(u).to(device)).float()
        pos = s[torch.arange(b, device=s.device), torch.from_numpy(pos_items).to(device)]
        r = positive_ranks(pos, s, torch.from_numpy(cand).to(device))
        ranks[idx] = r.cpu().numpy()
        cand_counts[idx] = cand.sum(axis=1) + 1
    model.train(was_training)
    return RankResult("full", users, items, ranks, cand_counts)
