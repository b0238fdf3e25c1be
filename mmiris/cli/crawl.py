"""``mmiris crawl``: placeholder until its stage lands."""


def register(sub) -> None:
    p = sub.add_parser("crawl", help="(not yet available)")
    p.set_defaults(func=lambda args: print("mmiris crawl is not available yet") or 1)
