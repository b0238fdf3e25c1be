"""Find the catalogue artifacts (items, item_text, item_images) that belong to a model or a
split, and read titles and posters from them — for tables and reports people read.

Artifacts are related through lineage: a model's parents include its split and feature
artifacts, features descend from item_images/item_text, a split from interactions. Items
are published by the same ingest call as interactions, so they are *siblings* (same
parents and parameters). ``find_related`` walks that family; the CLI lets a user name the
artifact instead (``--items``, ``--images``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from mmiris.artifacts import ArtifactRef, ArtifactStore
from mmiris.artifacts.store import Manifest
from mmiris.errors import MmirisError

log = logging.getLogger("mmiris.recommend")


def ancestors(store: ArtifactStore, refs: list[ArtifactRef | str]) -> list[Manifest]:
    """The manifests of ``refs`` and all their ancestors (each once)."""
    seen: dict[str, Manifest] = {}
    stack = [store.resolve(r) if isinstance(r, str) else r for r in refs]
    while stack:
        ref = stack.pop()
        if str(ref) in seen:
            continue
        try:
            m = store.manifest(ref)
        except MmirisError:
            continue
        seen[str(ref)] = m
        stack.extend(ArtifactRef.parse(p) for p in m.parents)
    return list(seen.values())


def find_related(store: ArtifactStore, refs: list[ArtifactRef | str], kind: str) -> ArtifactRef | None:
    """The artifact of ``kind`` related to ``refs``: an ancestor; else a sibling of an ancestor
    (same parents and parameters); else the newest artifact descending from the family."""
    family = ancestors(store, refs)
    for m in family:
        if m.kind == kind:
            return m.ref
    candidates = [m for name in store.names() for m in store.versions(name) if m.kind == kind]
    keys = {(tuple(sorted(m.parents)), _key(m.params)) for m in family}
    siblings = [m for m in candidates if (tuple(sorted(m.parents)), _key(m.params)) in keys]
    if siblings:
        return max(siblings, key=lambda m: m.created_at).ref
    family_refs = {str(m.ref) for m in family}
    # siblings of the family's members widen it (items next to interactions, …)
    for name in store.names():
        for m in store.versions(name):
            if (tuple(sorted(m.parents)), _key(m.params)) in keys:
                family_refs.add(str(m.ref))
    descendants = [m for m in candidates
                   if family_refs & {str(a.ref) for a in ancestors(store, [m.ref])}]
    if descendants:
        return max(descendants, key=lambda m: m.created_at).ref
    return None


def _key(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=str)


@dataclass
class Catalogue:
    """Titles (and lazily, posters) by item id; any part may be missing."""

    n_items: int
    titles: dict[int, str] = field(default_factory=dict)
    years: dict[int, int] = field(default_factory=dict)
    images: dict[int, bytes] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # kind -> artifact ref used

    def title(self, item: int) -> str:
        t = self.titles.get(int(item))
        return t if t else f"item {int(item)}"


def load_catalogue(store: ArtifactStore, refs: list[ArtifactRef | str], n_items: int, *,
                   items: str | None = None, item_text: str | None = None,
                   item_images: str | None = None, image_ids=None) -> Catalogue:
    """Titles from item_text (e.g. OMDb titles) where present, else from items; posters of
    ``image_ids`` (an iterable of item ids; None: no posters) from item_images. Explicit refs
    win over the lineage search."""
    cat = Catalogue(n_items)
    items_ref = store.resolve(items) if items else find_related(store, refs, "items")
    text_ref = store.resolve(item_text) if item_text else find_related(store, refs, "item_text")
    if items_ref is not None:
        t = store.read_table(items_ref, "items", columns=["item_id", "title", "year"]).to_pydict()
        for i, title, year in zip(t["item_id"], t["title"], t["year"]):
            if title:
                cat.titles[i] = title
            if year is not None:
                cat.years[i] = year
        cat.sources["items"] = str(items_ref)
    if text_ref is not None:
        t = store.read_table(text_ref, "item_text", columns=["item_id", "title"]).to_pydict()
        for i, title in zip(t["item_id"], t["title"]):
            if title:
                cat.titles[i] = title
        cat.sources["item_text"] = str(text_ref)
    if image_ids is not None:
        wanted = {int(i) for i in image_ids}
        img_ref = store.resolve(item_images) if item_images else find_related(store, refs, "item_images")
        if img_ref is not None:
            t = store.read_table(img_ref, "item_images", columns=["item_id", "image", "present"])
            t = t.filter(pc.is_in(t.column("item_id"), value_set=pa.array(sorted(wanted), pa.int64())))
            cat.images = {i: b for i, b, p in zip(t.column("item_id").to_pylist(), t.column("image").to_pylist(),
                                                 t.column("present").to_pylist()) if p and b}
            cat.sources["item_images"] = str(img_ref)
    if not cat.sources:
        log.info("no items/item_text artifact related to %s: showing item ids", ", ".join(map(str, refs)))
    return cat
