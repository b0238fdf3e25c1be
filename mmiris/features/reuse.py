"""Incremental extraction: which items an earlier extraction already encoded.

An earlier version of the same artifact name is usable when it was made with identical
``params`` (encoder id, weights sha256, options, preprocessing) and the same extraction
code. Its rows are reused for every item whose ``(item_id, content sha256)`` is unchanged;
the vectors themselves are read by the workers that write those items' parts.
"""

from __future__ import annotations

import logging

import numpy as np

from mmiris.artifacts import ArtifactRef, ArtifactStore
from mmiris.artifacts.store import full_code_version
from mmiris.errors import MmirisError
from mmiris.features.inputs import InputIndex, read_index

log = logging.getLogger("mmiris.extract")


def reusable(
    store: ArtifactStore, name: str, kind: str, params: dict, modality: str, code_version: str, index: InputIndex
) -> tuple[np.ndarray, ArtifactRef | None]:
    """Ids of ``index`` whose rows the newest usable earlier extraction holds (sorted), and its ref."""
    code = full_code_version(code_version)
    for m in reversed(store.versions(name)):
        if m.kind != kind or m.params != params or m.code_version != code or not m.parents:
            continue
        try:
            old = read_index(store, ArtifactRef.parse(m.parents[0]), modality)
            have = store.read_table(m.ref, "features", columns=["item_id"]).column("item_id").to_numpy()
        except MmirisError as exc:
            log.warning("cannot reuse %s (%s); skipping it", m.ref, exc)
            continue
        both, at_new, at_old = np.intersect1d(index.ids, old.ids, assume_unique=True, return_indices=True)
        same = index.sha256[at_new] == old.sha256[at_old]
        return both[same & np.isin(both, have)], m.ref
    return np.zeros(0, dtype=np.int64), None
