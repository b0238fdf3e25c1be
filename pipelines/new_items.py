"""Ingest of items that arrived after training: a JSON-lines file of records and/or a folder of
``<id>.<ext>`` images -> ``<name>_item_text`` / ``<name>_item_images``, the inputs of
``recommend_new_items`` (``mmiris recommend --new-items``).

The loaders of ``mmiris.ingest.folders`` read the files, with no id map: an item's id is its
own id in the source data (the record's id field, the image's file name), which the recommend
stage compares with the catalogue's source ids. Both inputs are read and checked (at least one
item, no id twice) before anything is written; then the artifacts are published together
(``ArtifactStore.publish_group``): a reader sees both or neither. Versions are the loaders':
keyed by the files' content and hashed with ``mmiris.ingest.folders``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa

from mmiris.artifacts import ArtifactRef, ArtifactStore, Pending, check_name
from mmiris.errors import InputError
from mmiris.ingest.folders import IMAGE_SUFFIXES, read_images_folder, read_texts_jsonl


@dataclass(frozen=True)
class NewItemsResult:
    item_text: ArtifactRef | None
    item_images: ArtifactRef | None

    def refs(self) -> list[ArtifactRef]:
        """What to pass to ``recommend_new_items`` (``--new-items``)."""
        return [r for r in (self.item_text, self.item_images) if r is not None]


def ingest_new_items(
    store: ArtifactStore,
    jsonl: str | Path | None = None,
    images_dir: str | Path | None = None,
    *,
    id_field: str = "movie_id",
    text_field: str = "Plot",
    title_field: str = "Title",
    name: str = "new",
) -> NewItemsResult:
    """Publish the new items' ``item_text`` (from ``jsonl``: the item id in ``id_field``, the
    text in ``text_field``, the title — what the "new this week" table and report show — in
    ``title_field``, genre, ... from OMDb's fields) and/or ``item_images`` (from ``images_dir``:
    ``<item id>.<ext>``), named ``<name>_item_text`` / ``<name>_item_images``.

    Errors (``InputError``, nothing published): neither input; a missing file or folder; a
    malformed line, a record without an integer ``id_field`` or with a title that is not text
    (file and line named); a ``title_field`` that no record has; a file with no record or a
    folder with no image; an id that two records or two images share.
    """
    if jsonl is None and images_dir is None:
        raise InputError("new items: expected a JSON-lines file of records and/or a folder of images")
    names = {
        kind: check_name(f"{name}_{kind}", f"new items name {name!r}: artifact name")
        for kind, given in (("item_text", jsonl), ("item_images", images_dir))
        if given is not None
    }
    members: list[Pending] = []
    if jsonl is not None:
        path = Path(jsonl).expanduser().resolve()  # the manifests name absolute paths
        members.append(
            read_texts_jsonl(
                path,
                id_field=id_field,
                text_field=text_field,
                title_field=title_field,
                require_title=True,  # the field was named for these records: a misspelt one is an error
                name=names["item_text"],
            )
        )
        table = members[-1].output.tables["item_text"]
        if table.num_rows == 0:
            raise InputError(f"{path}: no records; expected one JSON object per line, one per new item")
        _no_repeats(table, f"{path}: {id_field}", "records", "one record per new item")
    if images_dir is not None:
        folder = Path(images_dir).expanduser().resolve()
        members.append(read_images_folder(folder, name=names["item_images"]))
        table = members[-1].output.tables["item_images"]
        if table.num_rows == 0:
            suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
            raise InputError(
                f"image folder {folder}: no images; expected <item id>.<ext> ({suffixes}), one per new item"
            )
        _no_repeats(table, f"image folder {folder}: item", "images", "one image per new item", files=True)
    refs = dict(zip((m.kind for m in members), store.publish_group(members)))
    return NewItemsResult(refs.get("item_text"), refs.get("item_images"))


def _no_repeats(table: pa.Table, what: str, rows: str, expected: str, *, files: bool = False) -> None:
    """One row per item id; else an error naming an id that repeats (and its files)."""
    ids = table.column("item_id").to_pylist()
    twice = {i: n for i, n in Counter(ids).items() if n > 1}
    if not twice:
        return
    i, n = next(iter(twice.items()))
    shown = f"{what} {i} is on {n} {rows}"
    if files:
        uris = table.column("source_url").to_pylist()
        shown += f" ({', '.join(unquote(u.rsplit('/', 1)[-1]) for u, j in zip(uris, ids) if j == i)})"
    more = f", and {len(twice) - 1} more ids repeat" if len(twice) > 1 else ""
    raise InputError(f"{shown}{more}; expected {expected}")
