"""``mmiris evaluate``: placeholder until its stage lands."""


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="(not yet available)")
    p.set_defaults(func=lambda args: print("mmiris evaluate is not available yet") or 1)
