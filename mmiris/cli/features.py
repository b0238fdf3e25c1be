"""``mmiris features image|text|encoders``: pretrained feature extraction (pipelines/extract.py).

    mmiris features image --images item_images@latest [--encoder efficientnet-lite0]
    mmiris features text --text item_text [--encoder minilm|bert-base-uncased|doc2vec|DIR]
    mmiris features image --images-dir posters/          # publish item_images from files first
    mmiris features text --jsonl omdb.jsonl --text-field Plot --id-field movie_id
    mmiris features encoders

Runs on a LocalCluster (``--workers``, one thread each) or an existing Dask cluster
(``--scheduler tcp://host:8786``). Prints the feature artifact reference.
"""

from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    p = sub.add_parser("features", help="extract pretrained image/text features (Dask)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    fsub = p.add_subparsers(dest="features_command", metavar="{image,text,encoders}")

    img = fsub.add_parser("image", help="encode item images into an image_features artifact")
    src = img.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="item_images artifact (NAME, NAME@latest or NAME@VERSION)")
    src.add_argument("--images-dir", help="folder of <item_id>.<ext> images: published as "
                                          "item_images first")
    img.add_argument("--encoder", default="efficientnet-lite0",
                     help="registered name or local weights file (see `mmiris features encoders`)")
    _run_args(img, default_name="image_features")
    img.set_defaults(func=_image)

    txt = fsub.add_parser("text", help="encode item texts into a text_features artifact")
    src = txt.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="item_text artifact (NAME, NAME@latest or NAME@VERSION)")
    src.add_argument("--jsonl", help="JSON-lines file of records: published as item_text first")
    txt.add_argument("--id-field", default="movie_id", help="--jsonl: item id field")
    txt.add_argument("--text-field", default="Plot", help="--jsonl: text field")
    txt.add_argument("--encoder", default="minilm",
                     help="registered name or local Hugging Face folder")
    txt.add_argument("--pooling", choices=["mean", "cls"], default=None,
                     help="transformer pooling (default: masked mean, or the folder's own)")
    txt.add_argument("--max-length", type=int, default=None, help="token limit per text")
    _run_args(txt, default_name="text_features")
    txt.set_defaults(func=_text)

    enc = fsub.add_parser("encoders", help="list registered encoders")
    enc.set_defaults(func=_encoders)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def _run_args(p, default_name: str) -> None:
    p.add_argument("--scheduler", default=None,
                   help="Dask scheduler address of an existing cluster (default: a LocalCluster)")
    p.add_argument("--workers", type=int, default=None,
                   help="LocalCluster worker processes, one thread each (default: one per core)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="items per model call (default: 16 images on CPU, 64 on CUDA; 32 texts)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--no-reuse", action="store_true",
                   help="re-encode every item instead of reusing an earlier extraction's rows")
    p.add_argument("--name", default=default_name, help="output artifact name")


def _image(args) -> int:
    from mmiris.artifacts import ArtifactStore
    from pipelines.extract import extract_image_features, images_from_folder

    store = ArtifactStore()
    source = args.images or images_from_folder(store, args.images_dir)
    ref = extract_image_features(store, source, args.encoder, client=args.scheduler,
                                 workers=args.workers, batch_size=args.batch_size,
                                 device=args.device, reuse=not args.no_reuse, name=args.name)
    return _report(store, ref)


def _text(args) -> int:
    from mmiris.artifacts import ArtifactStore
    from pipelines.extract import extract_text_features, texts_from_jsonl

    store = ArtifactStore()
    source = args.text or texts_from_jsonl(store, args.jsonl, id_field=args.id_field,
                                           text_field=args.text_field)
    ref = extract_text_features(store, source, args.encoder, client=args.scheduler,
                                workers=args.workers, batch_size=args.batch_size,
                                device=args.device, reuse=not args.no_reuse,
                                pooling=args.pooling, max_length=args.max_length, name=args.name)
    return _report(store, ref)


def _report(store, ref) -> int:
    m = store.manifest(ref)
    s = m.stats
    print(f"{ref}  encoder={m.params.get('encoder')} dim={s.get('dim')} items={s.get('items')} "
          f"present={s.get('present')} missing={json.dumps(s.get('missing_by_reason', {}))} "
          f"computed={s.get('computed')} reused={s.get('reused')}")
    return 0


def _encoders(args) -> int:
    from mmiris.encoders import IMAGE_ENCODERS, TEXT_ENCODERS

    for kind, table in (("image", IMAGE_ENCODERS), ("text", TEXT_ENCODERS)):
        for name, desc in table.items():
            print(f"{kind:5}  {name:20}  {desc}")
    print("image  <file.pth>            local weights: resnet50:<file>, efficientnet-lite0:<file>")
    print("text   <folder>              local Hugging Face model folder")
    return 0

