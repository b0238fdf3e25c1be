"""Progress for long work: periodic log lines with count, rate and ETA (one way, everywhere)."""

from __future__ import annotations

import logging
import time


class Progress:
    """``with Progress(total, "extract images", log) as p: ... p.update(n)``.

    Logs at most every ``every_s`` seconds and once at the end:
    ``extract images: 1200/3872 (31.0%) 85.3 items/s, ETA 31s``.
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        logger: logging.Logger | None = None,
        unit: str = "items",
        every_s: float = 5.0,
    ):
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.log = logger or logging.getLogger("mmiris.progress")
        self.done = 0
        self.start = self.last = time.perf_counter()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self._emit(final=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last >= self.every_s:
            self.last = now
            self._emit()

    @property
    def rate(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self, final: bool = False) -> str:
        elapsed = time.perf_counter() - self.start
        rate = self.rate
        if self.total:
            pct = 100.0 * self.done / self.total
            if final:
                tail = f"done in {elapsed:.1f}s"
            else:
                eta = (self.total - self.done) / rate if rate > 0 else float("inf")
                tail = f"ETA {eta:.0f}s"
            return f"{self.desc}: {self.done}/{self.total} ({pct:.1f}%) {rate:.1f} {self.unit}/s, {tail}"
        return f"{self.desc}: {self.done} {self.unit}, {rate:.1f} {self.unit}/s, {elapsed:.1f}s"

    def _emit(self, final: bool = False) -> None:
        self.log.info(self.line(final))
