"""``mmiris report``: a self-contained HTML report of the store's metrics, training curves and
explained recommendations (open the printed path in any browser; no server needed)."""

from __future__ import annotations

from mmiris.artifacts import ArtifactStore


def register(sub) -> None:
    p = sub.add_parser("report", help="write an HTML report: metrics tables, loss curves, explanation cards")
    p.add_argument("--out", default="mmiris-report", help="output directory (default ./mmiris-report)")
    p.add_argument(
        "--metrics",
        nargs="+",
        default=None,
        help="metrics artifacts to show (default: every metrics artifact in the store)",
    )
    p.add_argument(
        "--recommendations",
        nargs="+",
        default=None,
        help="recommendations artifacts for the cards (default: per split, the newest with explanations)",
    )
    p.add_argument("--users", default=None, help="comma-separated user ids for the explanation cards")
    p.add_argument("--n-users", type=int, default=3, help="cards to show when --users is not given (default 3)")
    p.add_argument("--top", type=int, default=3, help="recommendations per card (default 3, as the paper)")
    p.add_argument("--title", default="mmiris report")
    p.add_argument("--items", default=None, help="items artifact for titles (default: found through lineage)")
    p.add_argument("--item-text", default=None, help="item_text artifact for titles (e.g. OMDb's)")
    p.add_argument("--item-images", default=None, help="item_images artifact for posters")
    p.add_argument(
        "--study",
        default=None,
        metavar="FILE",
        help="also show a benchmarks.study rows file (e.g. benchmarks/results/study.json): the "
        "study's tables and validation curves",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    import os

    from mmiris.cli.recommend import parse_users
    from mmiris.errors import MmirisError
    from mmiris.pipelines.report import build_report

    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise MmirisError(f"--out {args.out}: is a file, expected a folder (created if missing)")
    for opt, value in (("--n-users", args.n_users), ("--top", args.top)):
        if value < 1:
            raise MmirisError(f"{opt} {value}: expected at least 1")

    path = build_report(
        ArtifactStore(),
        args.out,
        metrics=args.metrics,
        recommendations=args.recommendations,
        users=parse_users(args.users),
        n_users=args.n_users,
        top=args.top,
        title=args.title,
        items=args.items,
        item_text=args.item_text,
        item_images=args.item_images,
        study=args.study,
    )
    print(f"report: {path.resolve()}")
    print(f"  open it in a browser: {path.resolve().as_uri()}")
    return 0
