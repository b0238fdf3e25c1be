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
) -> tuple[set[int], ArtifactRef | None]:
    """Ids of ``index`` whose rows the newest usable earlier extraction holds, and its ref."""
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
        old_sha = dict(zip(old.ids.tolist(), old.sha256))
        in_old = set(np.intersect1d(have, old.ids).tolist())
        ids = {iid for iid, sha in zip(index.ids.tolist(), index.sha256) if iid in in_old and old_sha[iid] == sha}
        return ids, m.ref
    return set(), None
