"""Publishing ``item_images`` / ``item_text`` from files a user already has: a folder of
images (``images_from_folder``) and a JSON-lines file of records (``texts_from_jsonl``).

The crawl stage is the normal producer of these artifacts; these serve existing folders and
the benchmarks (the ML-1M posters and OMDb plots, keyed by MovieLens movieId). Versions are
keyed by content: every file's sha256 with its name and item id, or the JSON-lines file's
sha256, and the id map.

With an ``id_map`` (source id -> dense item id, from the items artifact), files and records
whose id it does not hold are dropped and counted: the manifest's ``stats.unmatched_ids``
(files or records dropped) and ``stats.unmatched_examples`` (the first few of their ids).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa

from mmiris.artifacts import ArtifactRef, ArtifactStore, Output, Pending
from mmiris.artifacts.code_version import source_version
from mmiris.artifacts.schema import load_contract
from mmiris.errors import InputError

CODE = ("mmiris.ingest.folders",)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"}
UNMATCHED_EXAMPLES = 5  # ids of dropped files/records kept in the manifest, to show what they look like


def images_from_folder(
    store: ArtifactStore,
    folder: str | Path,
    *,
    id_map: dict[str, int] | None = None,
    limit: int | None = None,
    name: str = "item_images",
) -> ArtifactRef:
    """Publish ``read_images_folder``'s ``item_images`` artifact."""
    return _publish(store, read_images_folder(folder, id_map=id_map, limit=limit, name=name))


def read_images_folder(
    folder: str | Path,
    *,
    id_map: dict[str, int] | None = None,
    limit: int | None = None,
    name: str = "item_images",
) -> Pending:
    """An ``item_images`` artifact, read but not published, from ``<folder>/<key>.<ext>`` files.

    ``key`` is the file stem; it is the item id (an integer) unless ``id_map`` maps it (files
    it does not map are dropped and counted in ``stats.unmatched_ids``). Files are stored as fetched; format and size are read by content (posters named .jpg
    may be PNG or TIFF). Unreadable files stay in the artifact with ``present`` false.
    The version is keyed by content: every file's sha256 with its name and item id, and the
    id map, so an edited poster gives a new version and an unchanged folder finds the old one.
    """
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"image folder {folder}: not a directory")
    files = sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: (len(p.stem), p.stem)
    )
    rows = []
    unmatched: list[str] = []
    for p in files:
        key = p.stem
        if id_map is not None:
            if key not in id_map:
                unmatched.append(key)
                continue
            iid = id_map[key]
        else:
            try:
                iid = int(key)
            except ValueError:
                raise InputError(
                    f"image file {p}: name {key!r} is not an integer item id "
                    f"(pass id_map to map file names to item ids)"
                ) from None
        rows.append((iid, p))
    rows = sorted(rows)[:limit] if limit else sorted(rows)
    cols: dict[str, list] = {
        c: [] for c in ("item_id", "image", "present", "reason", "sha256", "width", "height", "format", "source_url")
    }
    for iid, p in rows:
        data = p.read_bytes()
        w = h = fmt = reason = None
        try:
            with Image.open(p) as im:
                w, h, fmt = im.size[0], im.size[1], im.format
        except Exception as exc:  # noqa: BLE001 - recorded, extraction reports it too
            reason = f"unreadable_image: {type(exc).__name__}"
        for c, v in zip(
            cols,
            (
                iid,
                data,
                bool(data),
                reason if data else "empty_file",
                hashlib.sha256(data).hexdigest(),
                w,
                h,
                fmt,
                p.absolute().as_uri(),  # a relative folder is fine
            ),
        ):
            cols[c].append(v)
    # An unreadable file keeps present=True: extraction is where it is decoded and reported.
    table = pa.table({c: pa.array(v) for c, v in cols.items()})
    content = _digest([(iid, p.name, sha) for (iid, p), sha in zip(rows, cols["sha256"])])
    return Pending(
        name,
        "item_images",
        Output({"item_images": table}, stats=_unmatched_stats(unmatched), info={"source": str(folder)}),
        params={
            "folder": str(folder.resolve()),
            "files": len(rows),
            "content_sha256": content,
            "id_map_sha256": _id_map_digest(id_map),
            # the dropped files are part of the input the stats describe (the content hash is not)
            "unmatched_sha256": _digest(sorted(unmatched)) if unmatched else None,
            "limit": limit,
        },
        code_version=source_version(*CODE),
    )


def _publish(store: ArtifactStore, p: Pending) -> ArtifactRef:
    return store.publish(p.name, p.kind, p.output, p.parents, p.params, p.code_version)


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _id_map_digest(id_map: dict[str, int] | None) -> str | None:
    return None if id_map is None else _digest(sorted((str(k), int(v)) for k, v in id_map.items()))


def _unmatched_stats(unmatched: list[str]) -> dict:
    """How many files/records ``id_map`` dropped, and the first few distinct ids of them."""
    return {"unmatched_ids": len(unmatched), "unmatched_examples": list(dict.fromkeys(unmatched))[:UNMATCHED_EXAMPLES]}


def _integer_id(key, where: str) -> int:
    """``key`` as an item id: an integer, or the decimal text of one (not a float or a bool)."""
    if isinstance(key, int) and not isinstance(key, bool):
        return key
    if isinstance(key, str):
        try:
            return int(key)
        except ValueError:
            pass
    raise InputError(f"{where} is {key!r}, expected an integer item id")


def texts_from_jsonl(
    store: ArtifactStore,
    path: str | Path,
    *,
    id_field: str = "movie_id",
    text_field: str = "Plot",
    title_field: str = "Title",
    id_map: dict[str, int] | None = None,
    limit: int | None = None,
    name: str = "item_text",
) -> ArtifactRef:
    """Publish ``read_texts_jsonl``'s ``item_text`` artifact."""
    return _publish(
        store,
        read_texts_jsonl(
            path,
            id_field=id_field,
            text_field=text_field,
            title_field=title_field,
            id_map=id_map,
            limit=limit,
            name=name,
        ),
    )


def read_texts_jsonl(
    path: str | Path,
    *,
    id_field: str = "movie_id",
    text_field: str = "Plot",
    title_field: str = "Title",
    require_title: bool = False,
    id_map: dict[str, int] | None = None,
    limit: int | None = None,
    name: str = "item_text",
) -> Pending:
    """An ``item_text`` artifact, read but not published, from a JSON-lines file (e.g. OMDb records).

    The item id is in ``id_field``, the text in ``text_field``, the title in ``title_field``
    (a record without it has no title); genre, director, actors, year and IMDb id in OMDb's
    fields. Lines are read as bytes: a line that is not UTF-8 is decoded as cp1252. A malformed
    line, one that is not a JSON object, (without ``id_map``) an id that is not an integer, or a
    title that is not text raises naming file and line; so does a ``text_field`` that no record
    has and, with ``require_title``, a ``title_field`` that no record has (a misspelt field,
    when the caller named it). Records
    whose id ``id_map`` does not hold are dropped and counted (``stats.unmatched_ids``). The
    version is keyed by the file's sha256, the fields read and the id map.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"text file {path}: not found")
    cols: dict[str, list] = {c: [] for c in load_contract("item_text").table("item_text").column_names()}
    file_hash = hashlib.sha256()
    unmatched: list[str] = []
    first: tuple[int, list[str]] | None = None  # the first record: its line and fields
    titled = False  # some record has title_field
    texted = False  # some record has text_field
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            file_hash.update(raw)
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                line = raw.decode("cp1252", errors="replace")
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{lineno}: not a JSON object ({exc.msg})") from None
            if not isinstance(rec, dict):
                raise InputError(f"{path}:{lineno}: not a JSON object (found {line.strip()[:40]!r})")
            first = first or (lineno, list(rec))
            titled = titled or title_field in rec
            texted = texted or text_field in rec
            key = rec.get(id_field)
            if key is None:
                raise InputError(f"{path}:{lineno}: field {id_field!r} missing (expected the item id)")
            if id_map is not None:
                if str(key) not in id_map:
                    unmatched.append(str(key))
                    continue
                iid = id_map[str(key)]
            else:
                iid = _integer_id(key, f"{path}:{lineno}: field {id_field!r}")
            text = rec.get(text_field)
            ok = isinstance(text, str) and text.strip() not in ("", "N/A")
            title = rec.get(title_field)
            if title is not None and not isinstance(title, str):
                raise InputError(
                    f"{path}:{lineno}: field {title_field!r} is {title!r}, expected the item's title as text"
                )
            vals = (
                iid,
                text if isinstance(text, str) else None,
                ok,
                None if ok else f"no_{text_field.lower()}",
                title,
                rec.get("Genre"),
                rec.get("Director"),
                rec.get("Actors"),
                rec.get("Year"),
                rec.get("imdbID"),
                "id",
                line.strip(),
            )
            for c, v in zip(cols, vals):
                cols[c].append(v)
            if limit and len(cols["item_id"]) >= limit:
                break
    if first is not None and not texted:  # a misspelt field would publish every item as textless
        at, fields = first
        raise InputError(
            f"{path}:{at}: field {text_field!r} missing, and from every other record too (expected the "
            f"item's text; this record has {', '.join(map(repr, fields)) or 'no field'})"
        )
    if require_title and first is not None and not titled:
        at, fields = first
        raise InputError(
            f"{path}:{at}: field {title_field!r} missing, and from every other record too (expected the "
            f"item's title; this record has {', '.join(map(repr, fields)) or 'no field'})"
        )
    table = pa.table({c: pa.array(v) for c, v in cols.items()})
    return Pending(
        name,
        "item_text",
        Output({"item_text": table}, stats=_unmatched_stats(unmatched), info={"source": str(path)}),
        params={
            "file": str(path.resolve()),
            "sha256": file_hash.hexdigest(),
            "id_field": id_field,
            "text_field": text_field,
            "title_field": title_field,
            "id_map_sha256": _id_map_digest(id_map),
            "limit": limit,
        },
        code_version=source_version(*CODE),
    )
