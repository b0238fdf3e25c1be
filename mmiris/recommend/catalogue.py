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
    descendants = [m for m in candidates if family_refs & {str(a.ref) for a in ancestors(store, [m.ref])}]
    if descendants:
        return max(descendants, key=lambda m: m.created_at).ref
    return None


def _key(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def user_source_ids(store: ArtifactStore, split_ref: ArtifactRef) -> tuple[ArtifactRef | None, list[str | None]]:
    """(the split's interactions artifact, source id of each dense user_id, None where unknown).

    Source ids come from the ``users`` table of the interactions the split was made from
    (for a derived split, of its source split's)."""
    seen: set[str] = set()
    todo = [split_ref]
    while todo:
        m = store.manifest(todo.pop())
        if str(m.ref) in seen:
            continue
        seen.add(str(m.ref))
        for p in (ArtifactRef.parse(x) for x in m.parents):
            kind = store.manifest(p).kind
            if kind == "interactions":
                t = store.read_table(p, "users").to_pydict()
                sources: list[str | None] = [None] * (max(t["user_id"], default=-1) + 1)
                for uid, sid in zip(t["user_id"], t["source_id"]):
                    sources[uid] = sid
                return p, sources
            if kind == "split":
                todo.append(p)
    return None, []


def find_user(
    store: ArtifactStore, split_ref: ArtifactRef, source: str | None, index: int | None
) -> tuple[int, str | None]:
    """(dense user_id, source id or None) of a user named by its source id or dense index.

    Source ids come from the ``users`` table of the split's interactions. A ``source`` that
    is no source id but an integer in range is read as a dense id (demo data, NCF files).
    """
    split_m = store.manifest(split_ref)
    n_users = int(split_m.stats.get("n_users", 0))
    inter, sources = user_source_ids(store, split_ref)
    if index is not None:
        if not 0 <= index < n_users:
            raise MmirisError(f"--user-index {index}: expected a dense user_id in 0..{n_users - 1} of {split_ref}")
        return index, sources[index] if index < len(sources) else None
    text = str(source).strip()
    matches = [u for u, s in enumerate(sources) if s == text]
    if matches:
        return matches[0], text
    if text.isdigit() and int(text) < n_users:
        k = int(text)
        log.info("--user %s: no user has source id %r; showing dense user_id %d", text, text, k)
        return k, sources[k] if k < len(sources) else None
    raise MmirisError(
        f"--user {text}: no user with source id {text!r} in {inter or split_ref} "
        f"(and not a dense user_id in 0..{n_users - 1}); expected the user's id in the "
        f"source data, or --user-index for the dense id"
    )


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


def load_catalogue(
    store: ArtifactStore,
    refs: list[ArtifactRef | str],
    n_items: int,
    *,
    items: str | None = None,
    item_text: str | None = None,
    item_images: str | None = None,
    image_ids=None,
) -> Catalogue:
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
            cat.images = {
                i: b
                for i, b, p in zip(
                    t.column("item_id").to_pylist(), t.column("image").to_pylist(), t.column("present").to_pylist()
                )
                if p and b
            }
            cat.sources["item_images"] = str(img_ref)
    if not cat.sources:
        log.info("no items/item_text artifact related to %s: showing item ids", ", ".join(map(str, refs)))
    return cat
