"""``mmiris ingest movielens | ncf | amazon``: source files or URLs -> artifacts.

Prints one line per published (or already present) artifact: ``<role> <name@version>``.
"""

from __future__ import annotations

from mmiris.artifacts import ArtifactStore
from mmiris.ingest.ncf import ncf_sources


def register(sub) -> None:
    p = sub.add_parser("ingest", help="read a dataset (MovieLens, NCF split, Amazon reviews) into the store")
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
