"""``mmiris demo``: placeholder until its stage lands."""


def register(sub) -> None:
    p = sub.add_parser("demo", help="(not yet available)")
    p.set_defaults(func=lambda args: print("mmiris demo is not available yet") or 1)
