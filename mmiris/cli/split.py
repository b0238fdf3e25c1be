"""``mmiris split``: placeholder until its stage lands."""


def register(sub) -> None:
    p = sub.add_parser("split", help="(not yet available)")
    p.set_defaults(func=lambda args: print("mmiris split is not available yet") or 1)
