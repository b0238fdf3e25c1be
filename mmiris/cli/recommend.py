"""``mmiris recommend``: top-N recommendations with explanations.

    mmiris recommend --model model-multimodal_iris                 # every user → artifact
    mmiris recommend --model model-multimodal_iris --users 1,2,3   # some users → artifact
    mmiris recommend --model model-multimodal_iris --user 10       # print a readable table
"""

from __future__ import annotations

from mmiris.artifacts import ArtifactStore
from mmiris.errors import MmirisError


def register(sub) -> None:
    p = sub.add_parser("recommend", help="top-N recommendations with explanations (artifact or one user's table)")
    p.add_argument("--model", required=True, help="model artifact (NAME, NAME@latest or NAME@VERSION)")
    p.add_argument("--split", default=None, help="split artifact (default: the split the model was trained on)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--users", default=None, help="comma-separated user ids (default: every user)")
    who.add_argument("--user", type=int, default=None, help="print one user's recommendations as a table")
    p.add_argument("--top-n", type=int, default=10, help="recommendations per user (default 10)")
    p.add_argument("--explain-k", type=int, default=3, help="explanation items per recommendation (default 3)")
    p.add_argument("--batch-users", type=int, default=256, help="users scored per batch (memory vs speed)")
    p.add_argument("--items", default=None, help="items artifact for titles (default: found through lineage)")
    p.set_defaults(func=run)


def parse_users(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise MmirisError(f"--users {text!r}: expected comma-separated integer user ids, e.g. 1,2,3") from None


def run(args) -> int:
    from mmiris.recommend.catalogue import load_catalogue
    from mmiris.recommend.render import format_user
    from pipelines.recommend import planned_ref, recommend

    store = ArtifactStore()
    kw = dict(top_n=args.top_n, explain_k=args.explain_k)
    if args.user is not None:
        # Reuse a full run if one exists; otherwise score just this user.
        full = planned_ref(store, args.model, args.split, **kw)
        ref = full if store.exists(full) else recommend(store, args.model, args.split, users=[args.user],
                                                        batch_users=args.batch_users, **kw)
        table = store.read_table(ref, "recommendations")
        m = store.manifest(ref)
        cat = load_catalogue(store, list(m.parents), _n_items(table), items=args.items)
        print(f"Top-{args.top_n} for user {args.user}  (model {m.parents[0]}, from {ref})")
        print(format_user(table, args.user, cat))
        return 0
    ref = recommend(store, args.model, args.split, users=parse_users(args.users), batch_users=args.batch_users, **kw)
    m = store.manifest(ref)
    print(f"recommendations: {ref}")
    print(f"  {m.stats['users']} users × top-{m.stats['top_n']}"
          + (f", {m.stats['explain_k']} explanation items each" if m.stats["explained"] else ", no explanations (model has no attention)")
          + (f"; {m.info['users_per_s']} users/s" if m.info.get("users_per_s") else ""))
    print(f"  one user as a table: mmiris recommend --model {args.model} --user <id>")
    return 0


def _n_items(table) -> int:
    col = table.column("item_id")
    return int(max(col.to_pylist(), default=-1)) + 1
