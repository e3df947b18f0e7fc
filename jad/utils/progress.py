"""Progress bars with ETA on stderr, built on tqdm.

On a terminal tqdm redraws the bar in place. Elsewhere (CI, pipes, log files) a line is printed
about every 10 % (and at the end) so logs stay short; the line is tqdm's own ``format_meter``.
``postfix`` carries live values such as the loss of the last step.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")


class Progress:
    """``with Progress("train", total=n, unit="step") as p: ... p.update(1, loss=0.3)``."""

    def __init__(
        self,
        desc: str,
        total: int,
        *,
        unit: str = "it",
        stream=None,
        enabled: bool = True,
        initial: int = 0,
    ):
        self.desc, self.total, self.unit = desc, max(int(total), 0), unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.n = self.initial = int(initial)
        self.postfix: dict[str, Any] = {}
        self.start = time.perf_counter()
        self._last_decile = -1
        self._bar: tqdm | None = None

    def __enter__(self) -> Progress:
        self.start = time.perf_counter()
        if self.enabled and self.tty:
            self._bar = tqdm(
                total=self.total,
                initial=self.initial,
                desc=self.desc,
                unit=self.unit,
                file=self.stream,
                dynamic_ncols=True,
                leave=True,
            )
        else:
            self._draw(force=True)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def update(self, k: int = 1, **postfix: Any) -> None:
        self.set(self.n + k, **postfix)

    def set(self, n: int, **postfix: Any) -> None:
        """Jump to ``n`` done (for callbacks that report a running count)."""
        if postfix:
            self.postfix.update(postfix)
        delta, self.n = int(n) - self.n, int(n)
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix(self._fmt_postfix(), refresh=False)
            self._bar.update(delta)
        else:
            self._draw()

    def _fmt_postfix(self) -> dict[str, str]:
        return {
            k: (f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in self.postfix.items()
        }

    def line(self) -> str:
        """The current state as one line (tqdm's format)."""
        post = ", ".join(f"{k}={v}" for k, v in self._fmt_postfix().items())
        return tqdm.format_meter(
            self.n,
            self.total or None,
            self.elapsed,
            prefix=self.desc,
            unit=self.unit,
            postfix=post or None,
            initial=self.initial,
        )

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        decile = int(10 * self.n / self.total) if self.total else 10
        if force or decile != self._last_decile:
            self._last_decile = decile
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and self._last_decile != 10 and self.n != self.initial:
            self.stream.write(self.line() + "\n")
            self.stream.flush()
            self._last_decile = 10


def track(
    items: Iterable[T], desc: str, total: int, *, unit: str = "it", enabled: bool = True
) -> Iterator[T]:
    """Iterate ``items`` while showing a progress bar."""
    with Progress(desc, total, unit=unit, enabled=enabled) as p:
        for x in items:
            yield x
            p.update(1)
