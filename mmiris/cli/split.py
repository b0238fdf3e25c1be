"""``mmiris split [INTERACTIONS]``: leave-one-out split with stored negatives."""

from __future__ import annotations

from mmiris.artifacts import ArtifactStore
from mmiris.splits.leave_one_out import MODES, SHORT_USER_POLICIES


def register(sub) -> None:
    p = sub.add_parser("split", help="leave-one-out split (one valid + one test item per user, 99 negatives)")
    p.add_argument(
        "interactions",
        nargs="?",
        default="interactions@latest",
        help="interactions artifact: NAME, NAME@latest or NAME@VERSION (default interactions@latest)",
    )
    p.add_argument(
        "--mode",
        choices=MODES,
        default="random",
        help="random held-out items with --seed (the paper, default) or latest by timestamp (NCF)",
    )
    p.add_argument("--negatives", type=int, default=99, help="sampled negatives per held-out item (default 99)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--short-users",
        choices=SHORT_USER_POLICIES,
        default="drop",
        help="users with < 3 interactions: drop (default), keep in train only, or error",
    )
    p.add_argument("--name", default=None, help="artifact name (default split; derived: <split>_sparse / _cold)")
    d = p.add_argument_group("derived settings (from an existing split; same validation/test rows where they can be)")
    d.add_argument(
        "--from",
        dest="from_split",
        default=None,
        metavar="SPLIT",
        help="derive from this split artifact instead of splitting interactions",
    )
    d.add_argument(
        "--keep",
        type=float,
        default=None,
        help="sparse users: keep this share of each user's training interactions (at least 1)",
    )
    d.add_argument(
        "--cold-items",
        type=float,
        default=None,
        help="cold items: hold this share of items out of training; their interactions become test "
        "cases ranked against negatives from the other cold items",
    )
    d.add_argument(
        "--cold-valid",
        type=float,
        default=0.0,
        metavar="F",
        help="with --cold-items: hold out this share of further items too and validate on them (one case "
        "per user, negatives from the other validation items) instead of on warm items; the test is unchanged",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from mmiris.pipelines.split import split_leave_one_out

    store = ArtifactStore()
    if args.cold_valid and args.cold_items is None:
        from mmiris.errors import MmirisError

        raise MmirisError("--cold-valid holds out validation items beside --cold-items; give --cold-items too")
    if args.from_split or args.keep is not None or args.cold_items is not None:
        from mmiris.errors import MmirisError
        from mmiris.pipelines.split import derive_split

        if not args.from_split:
            raise MmirisError("--keep and --cold-items derive from an existing split: name it with --from SPLIT")
        ref = derive_split(
            store,
            args.from_split,
            keep=args.keep,
            cold_items=args.cold_items,
            seed=args.seed,
            n_negatives=args.negatives,
            name=args.name,
            cold_valid=args.cold_valid,
        )
        stats = store.manifest(ref).stats
        print(f"split         {ref}  ({stats['setting']} setting, from {args.from_split})")
        print(
            f"  {stats['n_train']} train, {stats['n_valid']} valid, {stats['n_test']} test rows"
            + (f"; {stats['n_cold_items']} cold items" if stats["setting"] == "cold" else "")
            + (f"; {stats['n_cold_valid_items']} cold validation items" if "n_cold_valid_items" in stats else "")
        )
        return 0
    ref = split_leave_one_out(
        store,
        args.interactions,
        mode=args.mode,
        n_negatives=args.negatives,
        seed=args.seed,
        short_users=args.short_users,
        name="split" if args.name is None else args.name,
    )
    stats = store.manifest(ref).stats
    print(f"split         {ref}")
    print(
        f"  {stats['n_train']} train, {stats['n_valid']} valid, {stats['n_test']} test rows; "
        f"{stats.get('short_users_dropped', 0)} short users dropped"
    )
    return 0
