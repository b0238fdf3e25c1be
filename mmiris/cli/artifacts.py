"""``mmiris artifacts ls | show | lineage | gc``: the store, for humans."""

from __future__ import annotations

import json

from mmiris.artifacts import ArtifactStore


def register(sub) -> None:
    p = sub.add_parser("artifacts", help="list, show and trace artifacts in the store")
    asub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = asub.add_parser("ls", help="list artifacts (all names, or the versions of one)")
    ls.add_argument("name", nargs="?")
    show = asub.add_parser("show", help="print a version's manifest (NAME, NAME@latest, NAME@VERSION)")
    show.add_argument("ref")
    lin = asub.add_parser("lineage", help="print the tree of parent artifacts")
    lin.add_argument("ref")
    asub.add_parser("gc", help="remove leftovers of crashed publishes")
    p.set_defaults(func=run)


def run(args) -> int:
    store = ArtifactStore()
    if args.action == "ls":
        names = [args.name] if args.name else store.names()
        print(f"{'artifact':<44} {'kind':<16} {'rows':>12}  created")
        for name in names:
            for m in store.versions(name):
                rows = sum(t["rows"] for t in m.tables.values())
                print(f"{str(m.ref):<44} {m.kind:<16} {rows:>12}  {m.created_at}")
    elif args.action == "show":
        print(store.manifest(args.ref).to_json())
    elif args.action == "lineage":
        _print_tree(store.lineage(store.resolve(args.ref)))
    elif args.action == "gc":
        print(f"removed {store.gc_staging()} staging leftover(s)")
    return 0


def _print_tree(node: dict, indent: str = "") -> None:
    print(f"{indent}{node['ref']}  ({node['kind']}, {node['created_at']})")
    for p in node["parents"]:
        _print_tree(p, indent + "  ")


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
