"""Writing a benchmark's results file: all of it or nothing. The JSON goes to a temp file
beside the target and is renamed over it, so a killed benchmark never leaves half a file and
the committed results survive a crash mid-write. ``finish`` is a benchmark command's last
step: compute the row, refuse bad input in one line, save and print."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np


def jsonable(x):
    """``json.dumps`` default: numpy scalars as Python numbers; anything else is an error."""
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def write_json(path: str | Path, doc: dict) -> dict:
    """Write ``doc`` (no NaN, numpy scalars allowed) to ``path`` atomically; returns ``doc``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1, allow_nan=False, default=jsonable) + "\n")
    os.replace(tmp, path)
    return doc


def finish(prog: str, compute: Callable[[], dict], save: Callable[[Path, dict], dict], out: str | Path) -> int:
    """A benchmark command's last step: ``compute`` its row; on a bad input (``MmirisError`` or
    ``ValueError``) print one line naming ``prog`` to stderr, write nothing and return 2;
    otherwise ``save`` the row to ``out``, print it as one JSON line and return 0."""
    from mmiris.errors import MmirisError

    try:
        row = compute()
    except (MmirisError, ValueError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    save(Path(out), row)
    print(json.dumps(row), flush=True)
    return 0
