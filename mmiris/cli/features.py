"""``mmiris features``: placeholder until its stage lands."""


def register(sub) -> None:
    p = sub.add_parser("features", help="(not yet available)")
    p.set_defaults(func=lambda args: print("mmiris features is not available yet") or 1)
