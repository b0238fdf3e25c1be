"""``mmiris train``: placeholder until its stage lands."""


def register(sub) -> None:
    p = sub.add_parser("train", help="(not yet available)")
    p.set_defaults(func=lambda args: print("mmiris train is not available yet") or 1)
