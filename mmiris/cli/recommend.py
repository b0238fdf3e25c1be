"""``mmiris recommend``: top-N recommendations with explanations.

    mmiris recommend --model model-multimodal_iris                 # every user → artifact
    mmiris recommend --model model-multimodal_iris --users 1,2,3   # some users → artifact
    mmiris recommend --model model-multimodal_iris --user 10       # print a readable table
    mmiris recommend --model model-hybrid_iris --new-items new_item_text new_item_images [--user 10]

``--new-items``: items that arrived after training (item_text / item_images artifacts; their
item_id is the item's own id, which the catalogue must not have). Their features are
extracted with the model's encoders (or found), and each user gets the top-N among them
(``new-recommendations-<model>``). Models that score an item from its content only:
hybrid_iris, vbpr, content_knn; the others are refused.

User ids: ``--user`` takes the user's id in the source data (MovieLens ``UserID``, the
``source_id`` column of the interactions' ``users`` table); ``--user-index`` and ``--users``
take mmiris's dense 0-based ``user_id`` (the ids in the artifacts). The table names both.
"""

from __future__ import annotations

from mmiris.artifacts import ArtifactStore
from mmiris.errors import MmirisError


def register(sub) -> None:
    p = sub.add_parser("recommend", help="top-N recommendations with explanations (artifact or one user's table)")
    p.add_argument("--model", required=True, help="model artifact (NAME, NAME@latest or NAME@VERSION)")
    p.add_argument("--split", default=None, help="split artifact (default: the split the model was trained on)")
    who = p.add_mutually_exclusive_group()
    who.add_argument(
        "--users",
        default=None,
        help="comma-separated dense user ids (user_id in the artifacts, from 0; default: every user)",
    )
    who.add_argument(
        "--user",
        default=None,
        metavar="SOURCE_ID",
        help="print one user's recommendations as a table; the user's id in the source data "
        "(e.g. MovieLens UserID). An integer that is no source id is read as a dense id",
    )
    who.add_argument(
        "--user-index",
        type=int,
        default=None,
        metavar="USER_ID",
        help="like --user, with the dense 0-based user_id of the artifacts",
    )
    p.add_argument("--top-n", type=int, default=10, help="recommendations per user (default 10)")
    p.add_argument("--explain-k", type=int, default=3, help="explanation items per recommendation (default 3)")
    p.add_argument("--batch-users", type=int, default=256, help="users scored per batch (memory vs speed)")
    p.add_argument(
        "--items",
        default=None,
        help="items artifact for titles (default: found through lineage); must have the model's item count",
    )
    p.add_argument(
        "--new-items",
        nargs="+",
        default=None,
        metavar="REF",
        help="rank items that arrived after training instead of the catalogue: their item_text and/or "
        "item_images artifacts (or text_features/image_features made with the model's encoders); "
        "features are extracted with the model's encoders; content-aware models only (hybrid_iris, vbpr, "
        "content_knn)",
    )
    p.add_argument(
        "--knn-share",
        type=float,
        default=0.0,
        metavar="S",
        help="--new-items: rank by (1 - S)·model + S·content kNN over the model's features, each standardised "
        "over the user's new items (0, the default: the model alone; docs/content.md measured 0.6-0.8 best "
        "for hybrid_iris on ML-1M cold items); scores and explanations stay the model's",
    )
    p.add_argument(
        "--ensemble",
        nargs="+",
        default=None,
        metavar="MODEL",
        help="--new-items: further models (trained on the model's split from its feature artifacts, e.g. other "
        "seeds) averaged with it, each standardised over the user's new items (docs/content.md: two seeds of "
        "hybrid_iris ranked ML-1M cold items 0.005 HR@10 better than one); scores and explanations stay the model's",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        help="--new-items: Dask scheduler address for the feature extraction (default: a LocalCluster)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="--new-items: LocalCluster worker processes for the feature extraction (default: one per core)",
    )
    p.set_defaults(func=run)


def parse_users(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise MmirisError(f"--users {text!r}: expected comma-separated integer user ids, e.g. 1,2,3") from None


def run(args) -> int:
    from mmiris.pipelines.recommend import model_split, planned_ref, recommend
    from mmiris.recommend.catalogue import find_user, load_catalogue
    from mmiris.recommend.render import format_user

    store = ArtifactStore()
    if args.batch_users < 1:
        raise MmirisError(f"--batch-users {args.batch_users}: expected at least 1")
    if args.knn_share and args.new_items is None:
        raise MmirisError("--knn-share blends content kNN into the ranking of --new-items; give --new-items")
    if args.ensemble and args.new_items is None:
        raise MmirisError("--ensemble averages models over the ranking of --new-items; give --new-items")
    kw = dict(top_n=args.top_n, explain_k=args.explain_k)
    if args.new_items is not None:
        return _run_new_items(store, args, kw)
    if args.user is not None or args.user_index is not None:
        split_ref = store.resolve(args.split) if args.split else model_split(store, store.resolve(args.model))
        split_m = store.manifest(split_ref)
        dense, source = find_user(store, split_ref, args.user, args.user_index)
        n_items = int(split_m.stats.get("n_items", 0)) or None
        items_ref = _check_items(store, args.items, n_items) if args.items else None
        # Reuse a full run if one exists; otherwise score just this user.
        full = planned_ref(store, args.model, args.split, **kw)
        ref = (
            full
            if store.exists(full)
            else recommend(store, args.model, args.split, users=[dense], batch_users=args.batch_users, **kw)
        )
        table = store.read_table(ref, "recommendations")
        m = store.manifest(ref)
        cat = load_catalogue(
            store, list(m.parents), n_items or _n_items(table), items=str(items_ref) if items_ref else None
        )
        who = f"user {source} (source id; dense user_id {dense})" if source is not None else f"user_id {dense}"
        print(f"Top-{args.top_n} for {who}  (model {m.parents[0]}, from {ref})")
        print(format_user(table, dense, cat))
        return 0
    ref = recommend(store, args.model, args.split, users=parse_users(args.users), batch_users=args.batch_users, **kw)
    m = store.manifest(ref)
    print(f"recommendations: {ref}")
    print(
        f"  {m.stats['users']} users × top-{m.stats['top_n']}"
        + (
            f", {m.stats['explain_k']} explanation items each"
            if m.stats["explained"]
            else ", no explanations (model has no attention)"
        )
        + (f"; {m.info['users_per_s']} users/s" if m.info.get("users_per_s") else "")
    )
    print(f"  one user as a table: mmiris recommend --model {args.model} --user <id>")
    return 0


def _check_items(store: ArtifactStore, items: str, n_items: int | None):
    """``--items``: an items artifact with exactly the model's item count (titles are by row)."""
    ref = store.resolve(items)
    m = store.manifest(ref)
    if m.kind != "items":
        raise MmirisError(f"--items {ref} is a {m.kind!r} artifact, expected items")
    rows = m.tables["items"]["rows"]
    if n_items is not None and rows != n_items:
        raise MmirisError(
            f"--items {ref} has {rows} items, the model's catalogue has {n_items}: it belongs "
            f"to another dataset (leave --items out to find the model's own)"
        )
    return ref


def _n_items(table) -> int:
    col = table.column("item_id")
    return int(max(col.to_pylist(), default=-1)) + 1


def _run_new_items(store: ArtifactStore, args, kw: dict) -> int:
    """``--new-items``: the top-N among the new items, as an artifact or one user's table."""
    from mmiris.pipelines.recommend import model_split, planned_new_items_ref, recommend_new_items
    from mmiris.recommend.catalogue import find_user, load_catalogue
    from mmiris.recommend.render import format_user

    if args.workers is not None and args.workers < 1:
        raise MmirisError(f"--workers {args.workers}: expected at least 1")
    if args.items:
        raise MmirisError("--items names the catalogue's titles; with --new-items titles come from their item_text")
    extract = dict(client=args.scheduler, workers=args.workers, knn_share=args.knn_share, ensemble=args.ensemble or ())
    if args.user is None and args.user_index is None:
        ref = recommend_new_items(
            store,
            args.model,
            args.new_items,
            args.split,
            users=parse_users(args.users),
            batch_users=args.batch_users,
            **extract,
            **kw,
        )
        m = store.manifest(ref)
        print(f"new-item recommendations: {ref}")
        print(
            f"  {m.stats['users']} users × top-{m.stats['top_n']} of {m.stats['new_items']} new items "
            f"({m.stats['new_with_image']} with an image, {m.stats['new_with_text']} with a text)"
            + (f", {m.stats['explain_k']} explanation items each" if m.stats["explained"] else ", no explanations")
        )
        print(
            f"  one user as a table: mmiris recommend --model {args.model} --new-items {' '.join(args.new_items)} --user <id>"
        )
        return 0
    model_ref = store.resolve(args.model)
    split_ref = store.resolve(args.split) if args.split else model_split(store, model_ref)
    dense, source = find_user(store, split_ref, args.user, args.user_index)
    full = planned_new_items_ref(store, model_ref, args.new_items, split_ref, **extract, **kw)
    ref = (
        full
        if store.exists(full)
        else recommend_new_items(
            store, model_ref, args.new_items, split_ref, users=[dense], batch_users=args.batch_users, **extract, **kw
        )
    )
    table = store.read_table(ref, "recommendations")
    new = store.read_table(ref, "new_items").to_pydict()
    m = store.manifest(ref)
    n_items = int(m.stats["n_items"])
    cat = load_catalogue(store, [model_ref, split_ref], n_items)
    for item, new_id, title in zip(new["item_id"], new["new_item_id"], new["title"]):
        cat.titles[item] = title or f"new item {new_id}"
        cat.years.pop(item, None)
    who = f"user {source} (source id; dense user_id {dense})" if source is not None else f"user_id {dense}"
    print(
        f"New this week for {who}: top-{args.top_n} of {m.stats['new_items']} new items  (model {model_ref}, from {ref})"
    )
    print(format_user(table, dense, cat, ids=dict(zip(new["item_id"], new["new_item_id"]))))
    return 0
