"""A split artifact as numpy arrays, and user histories as CSR for the models."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mmiris.artifacts import ArtifactRef, ArtifactStore
from mmiris.errors import MmirisError


@dataclass
class UserHistory:
    """Each user's training items as CSR: items of user u are ``indices[indptr[u]:indptr[u+1]]``."""

    indptr: np.ndarray  # int64 [n_users + 1]
    indices: np.ndarray  # int64 [nnz], sorted within each user
    n_items: int

    @classmethod
    def from_pairs(cls, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> UserHistory:
        order = np.lexsort((items, users))
        users, items = users[order], items[order]
        counts = np.bincount(users, minlength=n_users)
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return cls(indptr, items.astype(np.int64), n_items)

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    def lengths(self, users: np.ndarray | None = None) -> np.ndarray:
        lens = np.diff(self.indptr)
        return lens if users is None else lens[users]

    def items_of(self, user: int) -> np.ndarray:
        return self.indices[self.indptr[user] : self.indptr[user + 1]]

    def padded(self, users: np.ndarray | torch.Tensor, pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Histories of ``users`` as ([B, L] item ids padded with ``pad``, [B, L] bool mask)."""
        users = users.cpu().numpy() if isinstance(users, torch.Tensor) else np.asarray(users)
        starts, lens = self.indptr[users], self.lengths(users)
        L = int(lens.max()) if len(lens) else 0
        col = np.arange(L)
        mask = col[None, :] < lens[:, None]
        idx = np.where(mask, starts[:, None] + col[None, :], 0)
        hist = np.where(mask, self.indices[idx] if len(self.indices) else pad, pad)
        return torch.from_numpy(hist.astype(np.int64)), torch.from_numpy(mask)

    def to_dense(self) -> np.ndarray:
        """[n_users, n_items] 0/1 float32 matrix (only for small data and closed-form models)."""
        m = np.zeros((self.n_users, self.n_items), dtype=np.float32)
        rows = np.repeat(np.arange(self.n_users), self.lengths())
        m[rows, self.indices] = 1.0
        return m


@dataclass
class SplitData:
    """Train pairs and the held-out valid/test items with their stored negatives."""

    ref: ArtifactRef | None
    n_users: int
    n_items: int
    train_users: np.ndarray
    train_items: np.ndarray
    valid_users: np.ndarray
    valid_items: np.ndarray
    valid_negatives: np.ndarray  # [n_valid, n_neg]
    test_users: np.ndarray
    test_items: np.ndarray
    test_negatives: np.ndarray  # [n_test, n_neg]

    def history(self) -> UserHistory:
        return UserHistory.from_pairs(self.train_users, self.train_items, self.n_users, self.n_items)


def load_split(store: ArtifactStore, ref: ArtifactRef | str) -> SplitData:
    m = store.manifest(ref)
    if m.kind != "split":
        raise MmirisError(f"artifact {m.ref} is a {m.kind!r} artifact, expected a split")
    for key in ("n_users", "n_items"):
        if key not in m.stats:
            raise MmirisError(f"split {m.ref}: manifest stats lack {key!r}")
    train = store.read_table(m.ref, "train")
    held = {}
    for t in ("valid", "test"):
        tab = store.read_table(m.ref, t)
        negs = tab.column("negatives").to_pylist()
        width = max((len(n) for n in negs), default=0)
        if any(len(n) != width for n in negs):
            raise MmirisError(f"split {m.ref}: table {t!r} has rows with differing negative counts")
        held[t] = (
            tab.column("user_id").to_numpy(),
            tab.column("item_id").to_numpy(),
            np.asarray(negs, dtype=np.int64).reshape(len(negs), width),
        )
    return SplitData(
        ref=m.ref,
        n_users=int(m.stats["n_users"]),
        n_items=int(m.stats["n_items"]),
        train_users=train.column("user_id").to_numpy(),
        train_items=train.column("item_id").to_numpy(),
        valid_users=held["valid"][0],
        valid_items=held["valid"][1],
        valid_negatives=held["valid"][2],
        test_users=held["test"][0],
        test_items=held["test"][1],
        test_negatives=held["test"][2],
    )
