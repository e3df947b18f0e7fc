"""The report's plots: matplotlib (Agg, no display) figures returned as PNG bytes.

Every function draws numbers it is given (scores, curves computed by ``jad.metrics``, a run's
history); nothing here computes a metric.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

WIDTH, HEIGHT, DPI = 3.1, 2.5, 100  # inches: 310 x 250 px per plot (four fit in a 1400 px window)
GOOD, DEFECTIVE = "#2a7ab0", "#d1495b"


def _figure(title: str, width: float = WIDTH):
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure  # no pyplot: no global figure state

    fig = Figure(figsize=(width, HEIGHT), dpi=DPI)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3, linewidth=0.5)
    return fig, ax


def _png(fig) -> bytes:
    fig.tight_layout(pad=0.4)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def score_histogram(
    good: np.ndarray,
    defective: np.ndarray,
    thresholds: Sequence[tuple[float, str]],
    title: str,
) -> bytes:
    """Histograms of good vs defective image scores on shared bins, thresholds as vertical lines."""
    fig, ax = _figure(title)
    values = np.concatenate([np.asarray(good, np.float64), np.asarray(defective, np.float64)])
    values = np.concatenate([values, [t for t, _ in thresholds]])
    lo, hi = float(values.min()), float(values.max())
    bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 31)
    if len(good):
        ax.hist(good, bins=bins, alpha=0.6, color=GOOD, label=f"good ({len(good)})")
    if len(defective):
        ax.hist(
            defective, bins=bins, alpha=0.6, color=DEFECTIVE, label=f"defective ({len(defective)})"
        )
    for (t, label), style in zip(thresholds, ("-", "--", ":"), strict=False):
        ax.axvline(t, color="black", linestyle=style, linewidth=1.2, label=label)
    ax.set_xlabel("raw image score", fontsize=8)
    ax.set_ylabel("test images", fontsize=8)
    ax.legend(fontsize=6, loc="upper right")
    return _png(fig)


def curves(
    lines: Sequence[tuple[np.ndarray, np.ndarray, str]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    diagonal: bool = False,
    xlim: tuple[float, float] = (0.0, 1.0),
) -> bytes:
    """Line plot of ``(x, y, label)`` curves (ROC, PR, PRO) on [xlim] x [0, 1]."""
    fig, ax = _figure(title)
    for (x, y, label), colour in zip(lines, (DEFECTIVE, GOOD, "#3b8b3b"), strict=False):
        ax.plot(x, y, color=colour, linewidth=1.3, label=label)
    if diagonal:
        ax.plot(xlim, xlim, color="grey", linewidth=0.7, linestyle=":")
    ax.set_xlim(*xlim)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    if lines:
        ax.legend(fontsize=6, loc="lower right")
    return _png(fig)


def series(
    lines: Sequence[tuple[np.ndarray, np.ndarray, str]],
    *,
    title: str,
    ylabel: str,
    marker_x: float | None = None,
    marker_label: str = "",
    log_y: bool = False,
) -> bytes:
    """Values over training steps (losses, learning rates, evaluations); ``marker_x`` draws the
    selected step. More than three lines: the legend goes to the right of a wider plot."""
    outside = len(lines) > 3
    fig, ax = _figure(title, WIDTH + 1.3 if outside else WIDTH)
    for x, y, label in lines:
        ax.plot(x, y, linewidth=1.2, marker="." if len(x) < 30 else None, label=label)
    if marker_x is not None:
        ax.axvline(marker_x, color="black", linestyle="--", linewidth=1.0, label=marker_label)
    if log_y and all(np.all(np.asarray(y) > 0) for _, y, _ in lines):
        ax.set_yscale("log")
    ax.set_xlabel("step", fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    if outside:
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    else:
        ax.legend(fontsize=6)
    return _png(fig)
