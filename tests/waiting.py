"""Waiting in tests on what can be seen (a file, a row, a server's request log), not on the
clock: a loaded machine makes every step slower, so only the overall limit is fixed, and it is
generous. A wait that runs out, or whose process ends first, fails naming what it waited for."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

PATIENCE_S = 1200.0  # the overall limit: 20 minutes for what takes seconds on an idle machine


def wait_until(
    ready: Callable[[], T],
    what: str,
    *,
    proc: subprocess.Popen | None = None,
    log: Path | None = None,
    timeout_s: float = PATIENCE_S,
    settle_s: float = 0.0,
    poll_s: float = 0.02,
) -> T:
    """Poll ``ready()`` until it is truthy (held for ``settle_s`` when given) and return it.

    ``proc``: fail at once if it ends first, with the end of its output (``log``: the file
    its output goes to)."""
    deadline = time.monotonic() + timeout_s
    since: float | None = None
    while True:
        value = ready()
        now = time.monotonic()
        if value:
            since = now if since is None else since
            if now - since >= settle_s:
                return value
        else:
            since = None
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process ended first (exit {proc.returncode}):\n{output_tail(proc, log)}")
        if now > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(poll_s)


def output_tail(proc: subprocess.Popen, log: Path | None = None, chars: int = 3000) -> str:
    if log is not None:
        return log.read_text(errors="replace")[-chars:] if log.exists() else ""
    out, err = proc.communicate()
    text = "".join(s.decode(errors="replace") if isinstance(s, bytes) else s for s in (out, err) if s)
    return text[-chars:]
