"""Minimal progress bars with ETA on stderr (no dependency).

On a terminal the bar redraws in place; otherwise (CI, pipes) it prints a line roughly every 10 %
so logs stay short.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def _fmt_seconds(s: float) -> str:
    s = max(0, int(round(s)))
    return (
        f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"
        if s >= 3600
        else f"{s // 60:02d}:{s % 60:02d}"
    )


class Progress:
    """``with Progress("features", total=n) as p: ... p.update(k)``."""

    def __init__(
        self, desc: str, total: int, *, unit: str = "it", stream=None, enabled: bool = True
    ):
        self.desc, self.total, self.unit = desc, max(int(total), 0), unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.n = 0
        self.start = time.perf_counter()
        self._last_decile = -1

    def __enter__(self) -> Progress:
        self.start = time.perf_counter()
        self._draw(force=True)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def update(self, k: int = 1) -> None:
        self.n += k
        self._draw()

    def set(self, n: int) -> None:
        """Jump to ``n`` done (for callbacks that report a running count)."""
        self.n = int(n)
        self._draw()

    def _line(self) -> str:
        el = self.elapsed
        frac = self.n / self.total if self.total else 1.0
        rate = self.n / el if el > 0 else 0.0
        eta = (self.total - self.n) / rate if rate > 0 else float("nan")
        width = 24
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        eta_s = _fmt_seconds(eta) if eta == eta else "--:--"
        return (
            f"{self.desc:<12} [{bar}] {self.n}/{self.total} {self.unit} "
            f"{_fmt_seconds(el)} elapsed, ETA {eta_s}, {rate:.1f} {self.unit}/s"
        )

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r" + self._line())
            self.stream.flush()
            return
        decile = int(10 * self.n / self.total) if self.total else 10
        if force or decile != self._last_decile:
            self._last_decile = decile
            self.stream.write(self._line() + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\r" + self._line() + "\n")
            self.stream.flush()
        elif self.enabled and self.n != self.total and self._last_decile != 10:
            self.stream.write(self._line() + "\n")


def track(
    items: Iterable[T], desc: str, total: int, *, unit: str = "it", enabled: bool = True
) -> Iterator[T]:
    """Iterate ``items`` while showing a progress bar."""
    with Progress(desc, total, unit=unit, enabled=enabled) as p:
        for x in items:
            yield x
            p.update(1)
