"""``mmiris report``: placeholder until its stage lands."""


def register(sub) -> None:
    p = sub.add_parser("report", help="(not yet available)")
    p.set_defaults(func=lambda args: print("mmiris report is not available yet") or 1)
