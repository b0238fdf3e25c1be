"""``mmiris ingest movielens | ncf | amazon | new-items``: source files or URLs -> artifacts.

Prints one line per published (or already present) artifact: ``<role> <name@version>``.
"""

from __future__ import annotations

from mmiris.artifacts import ArtifactStore
from mmiris.ingest.ncf import ncf_sources


def register(sub) -> None:
    p = sub.add_parser(
        "ingest", help="read a dataset (MovieLens, NCF split, Amazon reviews) or new items' content into the store"
    )
    isub = p.add_subparsers(dest="format", metavar="FORMAT", required=True)

    ml = isub.add_parser("movielens", help="MovieLens 100K / 1M / 10M / CSV release: folder, zip or URL")
    ml.add_argument("source", help="folder, file in it, .zip archive, or http(s) URL of the zip")
    ml.add_argument(
        "--encoding", default=None, help="text encoding of .dat/u.* files (default: UTF-8, else ISO-8859-1)"
    )
    _common(ml)
    ml.set_defaults(func=_movielens)

    n = isub.add_parser("ncf", help="NCF pre-split files (*.train.rating, *.test.rating, *.test.negative)")
    n.add_argument(
        "sources", nargs="+", metavar="DIR_OR_FILES", help="a folder holding the three files, or the three files/URLs"
    )
    n.add_argument("--item-map", help="ncf_item<TAB>movie_id<TAB>exact file joining items to MovieLens")
    n.add_argument("--movies", help="movies.dat or movies.csv (titles, genres); needs --item-map")
    n.add_argument("--links", help="links.csv (IMDb ids); needs --item-map")
    n.add_argument("--seed", type=int, default=0, help="seed of the validation rows (default 0)")
    n.add_argument(
        "--valid-negatives",
        type=int,
        default=None,
        help="negatives per validation row (default: as many as the test rows have)",
    )
    _common(n)
    n.set_defaults(func=_ncf)

    a = isub.add_parser("amazon", help="Amazon 2014/2018 reviews (+ meta) with k-core filtering")
    a.add_argument("reviews", help="reviews_<Category>.json.gz (2014) or <Category>.json.gz (2018)")
    a.add_argument("--meta", help="meta_<Category>.json.gz")
    a.add_argument("--kcore", type=int, default=5, help="k of the k-core filter (default 5, the paper)")
    _common(a)
    a.set_defaults(func=_amazon)

    ni = isub.add_parser(
        "new-items",
        help="items that arrived after training: records (JSON lines) and/or images -> item_text / item_images",
        description="Publish the content of items that arrived after training, for `mmiris recommend "
        "--new-items`: <name>_item_text from --jsonl and/or <name>_item_images from --images-dir, together "
        "(a bad input publishes neither). An item's id is its own id in the source data (the record's "
        "--id-field, the image's file name), not one of the catalogue's.",
    )
    ni.add_argument("--jsonl", help="JSON-lines file, one record per new item (e.g. OMDb records)")
    ni.add_argument("--id-field", default="movie_id", help="record field holding the item id (default movie_id)")
    ni.add_argument("--text-field", default="Plot", help="record field holding the text (default Plot)")
    ni.add_argument(
        "--title-field",
        default="Title",
        help="record field holding the title, shown by the new-this-week table and report (default Title)",
    )
    ni.add_argument("--images-dir", help="folder of <item id>.<ext> images (.jpg, .png, ...), one per new item")
    ni.add_argument("--name", default="new", help="artifact names <name>_item_text, <name>_item_images (default new)")
    ni.set_defaults(func=_new_items)


def _common(p) -> None:
    p.add_argument("--name-prefix", default="", help="prefix of the artifact names (e.g. ml1m-)")
    p.add_argument(
        "--on-bad-lines",
        choices=("error", "skip"),
        default="error",
        help="malformed lines: stop with an error (default) or skip and count them",
    )
    p.add_argument("--cache", default=None, help="download cache folder (default $MMIRIS_CACHE/downloads)")


def _print(result) -> int:
    for role in ("interactions", "items", "split"):
        ref = getattr(result, role)
        if ref is not None:
            print(f"{role:<13} {ref}")
    return 0


def _movielens(args) -> int:
    from mmiris.pipelines.ingest import ingest_movielens

    return _print(
        ingest_movielens(
            ArtifactStore(),
            args.source,
            name_prefix=args.name_prefix,
            encoding=args.encoding,
            on_bad_lines=args.on_bad_lines,
            cache=args.cache,
        )
    )


def _ncf(args) -> int:
    from mmiris.pipelines.ingest import ingest_ncf

    train, test, negatives = ncf_sources(args.sources)  # a folder, or the three files
    return _print(
        ingest_ncf(
            ArtifactStore(),
            train,
            test,
            negatives,
            item_map=args.item_map,
            movies=args.movies,
            links=args.links,
            seed=args.seed,
            n_valid_negatives=args.valid_negatives,
            name_prefix=args.name_prefix,
            on_bad_lines=args.on_bad_lines,
            cache=args.cache,
        )
    )


def _amazon(args) -> int:
    from mmiris.pipelines.ingest import ingest_amazon

    return _print(
        ingest_amazon(
            ArtifactStore(),
            args.reviews,
            args.meta,
            kcore=args.kcore,
            name_prefix=args.name_prefix,
            on_bad_lines=args.on_bad_lines,
            cache=args.cache,
        )
    )


def _new_items(args) -> int:
    from mmiris.errors import InputError
    from mmiris.pipelines.new_items import ingest_new_items

    if args.jsonl is None and args.images_dir is None:
        raise InputError("ingest new-items: expected --jsonl FILE and/or --images-dir FOLDER")
    store = ArtifactStore()
    res = ingest_new_items(
        store,
        args.jsonl,
        args.images_dir,
        id_field=args.id_field,
        text_field=args.text_field,
        title_field=args.title_field,
        name=args.name,
    )
    for role in ("item_text", "item_images"):
        ref = getattr(res, role)
        if ref is not None:
            m = store.manifest(ref)
            rows = m.tables[role]["rows"]
            print(f"{role:<13} {ref}  ({rows} new items)")
    print(f"score them: mmiris recommend --model MODEL --new-items {' '.join(str(r) for r in res.refs())}")
    return 0
