"""``mmiris recommend``: placeholder until its stage lands."""


def register(sub) -> None:
    p = sub.add_parser("recommend", help="(not yet available)")
    p.set_defaults(func=lambda args: print("mmiris recommend is not available yet") or 1)
