"""``mmiris ingest``: placeholder until its stage lands."""


def register(sub) -> None:
    p = sub.add_parser("ingest", help="(not yet available)")
    p.set_defaults(func=lambda args: print("mmiris ingest is not available yet") or 1)
