"""``mmiris features image|text|encoders``: pretrained feature extraction (pipelines/extract.py).

    mmiris features image --images item_images@latest [--encoder efficientnet-lite0]
    mmiris features text --text item_text [--encoder minilm|bert-base-uncased|doc2vec|DIR]
    mmiris features image --images-dir posters/          # publish item_images from files first
    mmiris features text --jsonl omdb.jsonl --text-field Plot --id-field movie_id
    mmiris features encoders

Ids: record ids (``--id-field``) and image file names are the items' ids in the source data
(MovieLens movieId) and are joined to the dense item ids through the ``source_id`` column of
an items artifact: ``--items`` or, by default, ``items@latest`` when the store has one. Ids
that match no item are an error naming the file (``--skip-unmatched`` drops and counts
them); ``--ids dense`` reads them as dense item ids, as does a store without items.

Runs on a LocalCluster (``--workers``, one thread each) or an existing Dask cluster
(``--scheduler tcp://host:8786``). Prints the feature artifact reference.
"""

from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    p = sub.add_parser(
        "features",
        help="extract pretrained image/text features (Dask)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fsub = p.add_subparsers(dest="features_command", metavar="{image,text,encoders}")

    img = fsub.add_parser("image", help="encode item images into an image_features artifact")
    src = img.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="item_images artifact (NAME, NAME@latest or NAME@VERSION)")
    src.add_argument("--images-dir", help="folder of <item_id>.<ext> images: published as item_images first")
    _id_args(img)
    img.add_argument(
        "--encoder",
        default="efficientnet-lite0",
        help="registered name or local weights file (see `mmiris features encoders`)",
    )
    _run_args(img, default_name="image_features")
    img.set_defaults(func=_image)

    txt = fsub.add_parser("text", help="encode item texts into a text_features artifact")
    src = txt.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="item_text artifact (NAME, NAME@latest or NAME@VERSION)")
    src.add_argument("--jsonl", help="JSON-lines file of records: published as item_text first")
    txt.add_argument("--id-field", default="movie_id", help="--jsonl: item id field")
    txt.add_argument("--text-field", default="Plot", help="--jsonl: text field")
    _id_args(txt)
    txt.add_argument("--encoder", default="minilm", help="registered name or local Hugging Face folder")
    txt.add_argument(
        "--pooling",
        choices=["mean", "cls"],
        default=None,
        help="transformer pooling (default: masked mean, or the folder's own)",
    )
    txt.add_argument("--max-length", type=int, default=None, help="token limit per text")
    _run_args(txt, default_name="text_features")
    txt.set_defaults(func=_text)

    enc = fsub.add_parser("encoders", help="list registered encoders")
    enc.set_defaults(func=_encoders)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def _id_args(p) -> None:
    p.add_argument(
        "--items",
        default=None,
        help="--images-dir/--jsonl: items artifact whose source ids the file names/records "
        "carry (default: items@latest when the store has one)",
    )
    p.add_argument(
        "--ids",
        choices=["source", "dense"],
        default="source",
        help="--images-dir/--jsonl: ids are source ids joined through --items (default), or dense item ids",
    )
    p.add_argument(
        "--skip-unmatched",
        action="store_true",
        help="drop (and count) records/files whose id matches no item instead of failing",
    )


def _id_map(store, args, keys: list[str], where: str, what: str) -> dict[str, int] | None:
    """Source id -> dense item id through the items artifact; None when ids are dense."""
    import logging

    from mmiris.errors import MmirisError

    if args.ids == "dense":
        return None
    if args.items is None and "items" not in store.names():
        logging.getLogger("mmiris.features").info(
            "no items artifact in the store: %s ids are read as dense item ids", where
        )
        return None
    ref = store.resolve(args.items or "items")
    m = store.manifest(ref)
    if m.kind != "items":
        raise MmirisError(f"--items {ref} is a {m.kind!r} artifact, expected items")
    t = store.read_table(ref, "items", columns=["item_id", "source_id"]).to_pydict()
    id_map = dict(zip(t["source_id"], t["item_id"]))
    unmatched = [k for k in keys if k not in id_map]
    if unmatched and not args.skip_unmatched:
        raise MmirisError(
            f"{where}: {len(unmatched)} of {len(keys)} {what} match no item of {ref} "
            f"(e.g. {unmatched[0]!r}); expected its source ids — pass --skip-unmatched to "
            f"drop and count them, or --ids dense if they are dense item ids"
        )
    if unmatched:
        print(f"skipped {len(unmatched)} of {len(keys)} {what.split(' ')[0]} whose id matches no item of {ref}")
    return id_map


def _check_name(name: str) -> None:
    from mmiris.artifacts import check_name

    check_name(name, "--name: artifact name")


def _run_args(p, default_name: str) -> None:
    p.add_argument(
        "--scheduler", default=None, help="Dask scheduler address of an existing cluster (default: a LocalCluster)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="LocalCluster worker processes, one thread each (default: one per core)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="items per model call (default: 16 images on CPU, 64 on CUDA; 32 texts)",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument(
        "--no-reuse", action="store_true", help="re-encode every item instead of reusing an earlier extraction's rows"
    )
    p.add_argument("--name", default=default_name, help="output artifact name")


def _image(args) -> int:
    from pathlib import Path

    from mmiris.artifacts import ArtifactStore
    from mmiris.encoders.registry import image_encoder_spec
    from mmiris.errors import MmirisError
    from mmiris.pipelines.extract import IMAGE_SUFFIXES, extract_image_features, images_from_folder

    _check_name(args.name)
    image_encoder_spec(args.encoder)  # a bad --encoder fails before item_images is published
    store = ArtifactStore()
    source = args.images
    if source is None:
        folder = Path(args.images_dir).expanduser().resolve()  # relative paths are fine
        if not folder.is_dir():
            raise MmirisError(f"--images-dir {args.images_dir}: not a directory")
        stems = [p.stem for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        id_map = _id_map(store, args, stems, args.images_dir, "image(s) are named by ids that")
        source = images_from_folder(store, folder, id_map=id_map)
    ref = extract_image_features(
        store,
        source,
        args.encoder,
        client=args.scheduler,
        workers=args.workers,
        batch_size=args.batch_size,
        device=args.device,
        reuse=not args.no_reuse,
        name=args.name,
    )
    return _report(store, ref)


def _text(args) -> int:
    from mmiris.artifacts import ArtifactStore
    from mmiris.encoders.registry import text_encoder_spec
    from mmiris.pipelines.extract import extract_text_features, texts_from_jsonl

    _check_name(args.name)
    if args.encoder != "doc2vec":  # doc2vec is trained on the texts themselves
        text_encoder_spec(args.encoder, pooling=args.pooling)  # fails before item_text is published
    store = ArtifactStore()
    source = args.text
    if source is None:
        keys = _jsonl_ids(args.jsonl, args.id_field)
        id_map = _id_map(store, args, keys, args.jsonl, f"record(s) have {args.id_field} values that")
        source = texts_from_jsonl(store, args.jsonl, id_field=args.id_field, text_field=args.text_field, id_map=id_map)
    ref = extract_text_features(
        store,
        source,
        args.encoder,
        client=args.scheduler,
        workers=args.workers,
        batch_size=args.batch_size,
        device=args.device,
        reuse=not args.no_reuse,
        pooling=args.pooling,
        max_length=args.max_length,
        name=args.name,
    )
    return _report(store, ref)


def _jsonl_ids(path: str, id_field: str) -> list[str]:
    """The ``id_field`` values of a JSON-lines file as text (lines that do not parse are left
    to the reader, which names them)."""
    from pathlib import Path

    from mmiris.errors import MmirisError

    p = Path(path)
    if not p.is_file():
        raise MmirisError(f"--jsonl {path}: not a file")
    keys = []
    with open(p, "rb") as f:
        for raw in f:
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get(id_field) is not None:
                keys.append(str(rec[id_field]))
    return keys


def _report(store, ref) -> int:
    m = store.manifest(ref)
    s = m.stats
    print(
        f"{ref}  encoder={m.params.get('encoder')} dim={s.get('dim')} items={s.get('items')} "
        f"present={s.get('present')} missing={json.dumps(s.get('missing_by_reason', {}))} "
        f"computed={s.get('computed')} reused={s.get('reused')} unmatched={s.get('unmatched_ids', 0)}"
        + (f" (e.g. {', '.join(map(repr, s['unmatched_examples']))})" if s.get("unmatched_examples") else "")
    )
    return 0


def _encoders(args) -> int:
    from mmiris.encoders import IMAGE_ENCODERS, TEXT_ENCODERS

    for kind, table in (("image", IMAGE_ENCODERS), ("text", TEXT_ENCODERS)):
        for name, desc in table.items():
            print(f"{kind:5}  {name:20}  {desc}")
    print("image  <file.pth>            local weights: resnet50:<file>, efficientnet-lite0:<file>")
    print("text   <folder>              local Hugging Face model folder")
    return 0
