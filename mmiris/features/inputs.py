"""Reading the input artifacts of feature extraction (``item_images``, ``item_text``).

The driver builds an :class:`InputIndex` part by part: item ids, content hashes (the reuse
key) and the reason of every item without content, never the image bytes when the artifact
records their sha256 (crawl and folder inputs do). Workers read the bytes or texts of their
own items with :func:`read_payloads`, which skips the part files and row groups outside
their id range.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from mmiris.artifacts import ArtifactRef, ArtifactStore

TABLE = {"image": "item_images", "text": "item_text"}
PAYLOAD = {"image": "image", "text": "text"}


@dataclass
class InputIndex:
    """The items of an input artifact: ``ids``/``sha256`` of those with content (sorted by
    id), ``missing`` (item id -> reason) for those without, and counted input treatments."""

    ids: np.ndarray
    sha256: list[str]
    missing: dict[int, str]
    treatments: Counter = field(default_factory=Counter)
    lengths: np.ndarray | None = None  # texts: characters after normalising (batches by length)
    rows: np.ndarray | None = None  # texts: row order in the input (ties in length keep it)

    def __len__(self) -> int:
        return len(self.ids)


def read_index(store: ArtifactStore, ref: ArtifactRef, modality: str) -> InputIndex:
    return image_index(store, ref) if modality == "image" else text_index(store, ref)


def image_index(store: ArtifactStore, ref: ArtifactRef) -> InputIndex:
    """Duplicate item ids keep their first row (``duplicate_item_id_dropped``). Image bytes
    are read only to hash the rows whose ``sha256`` is null."""
    ids: list[int] = []
    shas: list[str] = []
    missing: dict[int, str] = {}
    pre: Counter[str] = Counter()
    seen: set[int] = set()
    for t in store.iter_tables(ref, "item_images", columns=["item_id", "present", "reason", "sha256"]):
        cols = [t.column(c).to_pylist() for c in ("item_id", "present", "reason", "sha256")]
        unhashed = [i for i, (p, s) in enumerate(zip(cols[1], cols[3])) if p and not s]
        if unhashed:  # only these rows' bytes are read (one part at a time)
            ids_part = pa.array([cols[0][i] for i in unhashed], pa.int64())
            got = store.read_table(ref, "item_images", columns=["item_id", "image"], ids=ids_part.to_pylist())
            hashed: dict[int, str] = {}
            for iid, data in zip(got.column("item_id").to_pylist(), got.column("image").to_pylist()):
                hashed.setdefault(iid, hashlib.sha256(data).hexdigest() if data else "")
            for i in unhashed:
                cols[3][i] = hashed.get(cols[0][i], "")
        for iid, present, reason, sha in zip(*cols):
            if iid in seen:
                pre["duplicate_item_id_dropped"] += 1
                continue
            seen.add(iid)
            if not present or sha == "":
                missing[iid] = reason or "no_image"
                continue
            ids.append(iid)
            shas.append(sha)
    return _sorted_index(ids, shas, missing, pre)


def text_index(store: ArtifactStore, ref: ArtifactRef) -> InputIndex:
    """Texts are normalised (``normalize_text``) to hash them and to count their treatments;
    empty or placeholder texts are missing."""
    from mmiris.encoders.preprocess import normalize_text

    ids: list[int] = []
    shas: list[str] = []
    lengths: list[int] = []
    missing: dict[int, str] = {}
    pre: Counter[str] = Counter()
    seen: set[int] = set()
    for t in store.iter_tables(ref, "item_text", columns=["item_id", "text", "present", "reason"]):
        # As bytes: a string column written by another tool may hold invalid UTF-8, which
        # normalize_text decodes (cp1252/latin-1) instead of failing the whole run.
        raw = t.column("text").cast(pa.binary()).to_pylist()
        for iid, data, present, reason in zip(
            t.column("item_id").to_pylist(), raw, t.column("present").to_pylist(), t.column("reason").to_pylist()
        ):
            if iid in seen:
                pre["duplicate_item_id_dropped"] += 1
                continue
            seen.add(iid)
            if not present or data is None:
                missing[iid] = reason or "no_text"
                continue
            norm = normalize_text(data)
            pre.update(norm.treatments)
            if norm.text is None:
                missing[iid] = norm.reason or "no_text"
                continue
            ids.append(iid)
            shas.append(hashlib.sha256(norm.text.encode()).hexdigest())
            lengths.append(len(norm.text))
    return _sorted_index(ids, shas, missing, pre, lengths)


def _sorted_index(
    ids: list[int], shas: list[str], missing: dict[int, str], pre: Counter, lengths: list[int] | None = None
) -> InputIndex:
    arr = np.asarray(ids, dtype=np.int64)
    order = np.argsort(arr, kind="stable")
    if lengths is None:
        return InputIndex(arr[order], [shas[i] for i in order], missing, pre)
    lens = np.asarray(lengths, dtype=np.int64)[order]
    return InputIndex(arr[order], [shas[i] for i in order], missing, pre, lens, order.astype(np.int64))


def texts_in_table_order(store: ArtifactStore, ref: ArtifactRef) -> list[str]:
    """Normalised texts in the artifact's row order (first row of a duplicated id): what
    Doc2Vec trains on, in the order that makes its model reproducible."""
    from mmiris.encoders.preprocess import normalize_text

    out: list[str] = []
    seen: set[int] = set()
    for t in store.iter_tables(ref, "item_text", columns=["item_id", "text", "present"]):
        raw = t.column("text").cast(pa.binary()).to_pylist()
        for iid, data, present in zip(t.column("item_id").to_pylist(), raw, t.column("present").to_pylist()):
            if iid in seen:
                continue
            seen.add(iid)
            text = normalize_text(data).text if present and data is not None else None
            if text is not None:
                out.append(text)
    return out


def read_payloads(store: ArtifactStore, ref: ArtifactRef, modality: str, ids: list[int]) -> list[tuple[int, object]]:
    """Runs on a worker: ``(item_id, image bytes | normalised text)`` of these items, in id
    order, first row of a duplicated id, empty bytes as an empty payload."""
    if not ids:
        return []
    table, col = TABLE[modality], PAYLOAD[modality]
    t = store.read_table(ref, table, columns=["item_id", col], ids=ids)
    values = t.column(col).cast(pa.binary()).to_pylist() if modality == "text" else t.column(col).to_pylist()
    first: dict[int, object] = {}
    for iid, data in zip(t.column("item_id").to_pylist(), values):
        first.setdefault(iid, data)
    if modality == "text":
        from mmiris.encoders.preprocess import normalize_text

        first = {iid: normalize_text(data).text for iid, data in first.items()}  # type: ignore[arg-type]
    return [(iid, first[iid]) for iid in sorted(first)]
