"""Item modalities (Cornac's idea): feature vectors with their own item ids and present mask,
joined to the model's item id space by id, never by row position."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mmiris.artifacts import ArtifactRef, ArtifactStore
from mmiris.errors import MmirisError


@dataclass
class ItemModality:
    """``features[i]`` is item i's vector (zeros where ``present[i]`` is False)."""

    name: str  # "image" or "text"
    features: torch.Tensor  # float32 [n_items, dim]
    present: torch.Tensor  # bool [n_items]
    encoder: str = ""

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    @classmethod
    def from_arrays(
        cls, name: str, item_ids: np.ndarray, vectors: np.ndarray, present: np.ndarray, n_items: int, encoder: str = ""
    ) -> ItemModality:
        item_ids = np.asarray(item_ids, dtype=np.int64)
        if len(item_ids) and (item_ids.min() < 0 or item_ids.max() >= n_items):
            bad = item_ids[(item_ids < 0) | (item_ids >= n_items)][0]
            raise MmirisError(f"{name} features: item_id {bad} outside the catalogue 0..{n_items - 1}")
        feats = np.zeros((n_items, vectors.shape[1]), dtype=np.float32)
        pres = np.zeros(n_items, dtype=bool)
        keep = np.asarray(present, dtype=bool)
        feats[item_ids[keep]] = vectors[keep]
        pres[item_ids[keep]] = True
        return cls(name, torch.from_numpy(feats), torch.from_numpy(pres), encoder)


def load_modality(store: ArtifactStore, ref: ArtifactRef | str, n_items: int) -> ItemModality:
    """Read an image_features/text_features artifact into the item id space 0..n_items-1."""
    m = store.manifest(ref)
    if m.kind not in ("image_features", "text_features"):
        raise MmirisError(f"artifact {m.ref} is a {m.kind!r} artifact, expected image/text features")
    t = store.read_table(m.ref, "features")
    present = t.column("present").to_numpy(zero_copy_only=False)
    col = t.column("feature").combine_chunks()
    dim = col.type.list_size
    filled = col.fill_null([0.0] * dim) if col.null_count else col
    vectors = filled.flatten().to_numpy(zero_copy_only=False).reshape(len(t), dim).astype(np.float32)
    name = "image" if m.kind == "image_features" else "text"
    return ItemModality.from_arrays(
        name, t.column("item_id").to_numpy(), vectors, present, n_items, encoder=str(m.params.get("encoder", ""))
    )
