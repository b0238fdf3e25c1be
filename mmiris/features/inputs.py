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
    id), ``missing_ids``/``missing_reasons`` of those without, and counted input treatments.

    Arrays, not Python lists, dicts or sets: the driver holds the index of the whole
    catalogue, 72 bytes an item with content (88 with the texts' lengths and rows)."""

    ids: np.ndarray  # int64
    sha256: np.ndarray  # bytes (ASCII hex): content hashes, the reuse key, aligned with ids
    missing_ids: np.ndarray  # int64, in the input's row order
    missing_reasons: pa.ChunkedArray  # strings, aligned with missing_ids
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
    parts = _IndexParts()
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
        first = parts.first_rows(cols[0])
        for iid, present, reason, sha, keep in zip(*cols, first):
            if not keep:
                continue
            if not present or sha == "":
                parts.add_missing(iid, reason or "no_image")
            else:
                parts.add(iid, sha)
        parts.end_part()
    return parts.index()


def text_index(store: ArtifactStore, ref: ArtifactRef) -> InputIndex:
    """Texts are normalised (``normalize_text``) to hash them and to count their treatments;
    empty or placeholder texts are missing."""
    from mmiris.encoders.preprocess import normalize_text

    parts = _IndexParts(lengths=True)
    for t in store.iter_tables(ref, "item_text", columns=["item_id", "text", "present", "reason"]):
        # As bytes: a string column written by another tool may hold invalid UTF-8, which
        # normalize_text decodes (cp1252/latin-1) instead of failing the whole run.
        raw = t.column("text").cast(pa.binary()).to_pylist()
        ids = t.column("item_id").to_pylist()
        first = parts.first_rows(ids)
        for iid, data, present, reason, keep in zip(
            ids, raw, t.column("present").to_pylist(), t.column("reason").to_pylist(), first
        ):
            if not keep:
                continue
            if not present or data is None:
                parts.add_missing(iid, reason or "no_text")
                continue
            norm = normalize_text(data)
            parts.treatments.update(norm.treatments)
            if norm.text is None:
                parts.add_missing(iid, norm.reason or "no_text")
                continue
            parts.add(iid, hashlib.sha256(norm.text.encode()).hexdigest(), len(norm.text))
        parts.end_part()
    return parts.index()


class _IndexParts:
    """An :class:`InputIndex` built one input part at a time: Python lists for the rows of the
    current part only, numpy/Arrow chunks for the parts before it."""

    def __init__(self, lengths: bool = False):
        self.seen = np.zeros(0, dtype=np.int64)  # sorted ids of the rows read so far
        self.treatments: Counter[str] = Counter()
        self.with_lengths = lengths
        self.chunks: dict[str, list] = {"ids": [], "sha256": [], "lengths": [], "missing_ids": [], "reasons": []}
        self.part: dict[str, list] = {k: [] for k in self.chunks}

    def first_rows(self, ids: list[int]) -> np.ndarray:
        """Whether each row is its id's first in the input (earlier parts included)."""
        arr = np.asarray(ids, dtype=np.int64)
        first = np.zeros(len(arr), dtype=bool)
        first[np.unique(arr, return_index=True)[1]] = True
        first &= ~np.isin(arr, self.seen)
        if dropped := int(len(arr) - first.sum()):
            self.treatments["duplicate_item_id_dropped"] += dropped
        self.seen = np.union1d(self.seen, arr)
        return first

    def add(self, iid: int, sha: str, length: int = 0) -> None:
        self.part["ids"].append(iid)
        self.part["sha256"].append(sha)
        self.part["lengths"].append(length)

    def add_missing(self, iid: int, reason: str) -> None:
        self.part["missing_ids"].append(iid)
        self.part["reasons"].append(reason)

    def end_part(self) -> None:
        p = self.part
        self.chunks["ids"].append(np.asarray(p["ids"], dtype=np.int64))
        self.chunks["sha256"].append(np.array([s.encode() for s in p["sha256"]], dtype="S"))
        if self.with_lengths:
            self.chunks["lengths"].append(np.asarray(p["lengths"], dtype=np.int64))
        self.chunks["missing_ids"].append(np.asarray(p["missing_ids"], dtype=np.int64))
        self.chunks["reasons"].append(pa.array(p["reasons"], pa.string()))
        self.part = {k: [] for k in self.chunks}

    def index(self) -> InputIndex:
        c = self.chunks
        ids = _concat(c["ids"])
        sha256 = np.concatenate(c["sha256"]) if c["sha256"] else np.zeros(0, dtype="S64")
        c["sha256"].clear()  # the chunks go before any copy below
        order = np.argsort(ids, kind="stable")
        if np.any(ids[1:] < ids[:-1]):  # usually in id order already (item_images are sorted by it)
            ids, sha256 = ids[order], sha256[order]
        index = InputIndex(
            ids,
            sha256,
            _concat(c["missing_ids"]),
            pa.chunked_array(c["reasons"], pa.string()),
            self.treatments,
        )
        if self.with_lengths:
            index.lengths, index.rows = _concat(c["lengths"])[order], order
        return index


def _concat(chunks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)


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
