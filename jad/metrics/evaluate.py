"""Per-category evaluation, the mean over categories, a text table and JSON/CSV output."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from jad.metrics.accumulator import PixelAccumulator
from jad.metrics.errors import MetricError
from jad.metrics.pro import check_pixel_arrays
from jad.metrics.ranking import ranking_curves, ranking_metrics
from jad.utils.atomic import dumps_json, write_text

#: Result keys in table order; all are fractions in [0, 1] (pixel keys None without masks).
KEYS = (
    "image_auroc",
    "pixel_auroc",
    "aupro",
    "image_f1_max",
    "pixel_f1_max",
    "image_ap",
    "pixel_ap",
)
_HEADERS = {
    "image_auroc": "I-AUROC",
    "pixel_auroc": "P-AUROC",
    "aupro": "AU-PRO",
    "image_f1_max": "I-F1max",
    "pixel_f1_max": "P-F1max",
    "image_ap": "I-AP",
    "pixel_ap": "P-AP",
    # decisions at calibrated thresholds (jad.metrics.calibration)
    "image_f1": "I-F1@thr",
    "image_precision": "I-Prec",
    "image_recall": "I-Rec",
    "image_false_alarm_rate": "I-FAR",
    "pixel_f1": "P-F1@thr",
}
MEAN = "mean"


def evaluate_category(
    image_labels: np.ndarray,
    image_scores: np.ndarray,
    masks: np.ndarray | None = None,
    maps: np.ndarray | None = None,
    *,
    limit: float = 0.3,
    connectivity: int = 8,
    return_curves: bool = False,
    max_curve_points: int | None = 1000,
):
    """All metrics of one category (and, on request, the curves they are areas of).

    Args:
      image_labels: [N] 0 = good, anything else = anomalous.
      image_scores: [N] image anomaly scores (higher = more anomalous).
      masks: [N, H, W] ground truth (defect iff ``!= 0``; float/bool/uint8), or None.
      maps: [N, H, W] anomaly maps at the masks' resolution, or None (needed iff masks given).
      limit: AU-PRO FPR limit. connectivity: AU-PRO regions, 8 (official) or 4.
      return_curves: also return the curves, computed from the same sorted scores.
      max_curve_points: thin the pixel curves to this many points for drawing (None: all).

    Returns:
      ``{key: fraction}`` for every key of :data:`KEYS`; the pixel keys (``pixel_*``, ``aupro``)
      are None when no masks are given. With ``return_curves``: ``(that dict, curves)``, curves
      a flat dict of float64 arrays: ``image_roc_fpr, image_roc_tpr, image_pr_recall,
      image_pr_precision`` (every point) and, with masks, ``pixel_roc_fpr, pixel_roc_tpr,
      pixel_pr_recall, pixel_pr_precision, pro_fpr, pro_pro``
      (:meth:`PixelAccumulator.curves`).
    """
    image_labels = np.asarray(image_labels).reshape(-1)
    image_scores = np.asarray(image_scores).reshape(-1)
    img = ranking_metrics(image_labels, image_scores)
    out: dict[str, float | None] = {
        "image_auroc": img["auroc"],
        "pixel_auroc": None,
        "aupro": None,
        "image_f1_max": img["f1_max"],
        "pixel_f1_max": None,
        "image_ap": img["ap"],
        "pixel_ap": None,
    }
    curves: dict[str, np.ndarray] = {}
    if return_curves:
        c = ranking_curves(image_labels, image_scores)
        curves = {f"image_{k}": v for k, v in c.items() if k != "pr_threshold"}
    if masks is None and maps is None:
        return (out, curves) if return_curves else out
    if masks is None or maps is None:
        missing = "masks" if masks is None else "maps"
        raise MetricError(f"pixel metrics need both masks and maps; {missing} is None.")
    masks, maps = check_pixel_arrays(masks, maps)
    if masks.shape[0] != image_labels.size:
        raise MetricError(
            f"{image_labels.size} image labels but {masks.shape[0]} masks/maps; pass one mask and "
            "one map per test image."
        )
    acc = PixelAccumulator(
        masks.shape[1],
        masks.shape[2],
        capacity=masks.shape[0],
        dtype=np.float64 if maps.dtype == np.float64 else np.float32,
        connectivity=connectivity,
    )
    acc.add(masks, maps)
    out.update(acc.compute(limit))
    if return_curves:
        pixel = acc.curves(limit, max_curve_points)
        curves.update({k if k.startswith("pro") else f"pixel_{k}": v for k, v in pixel.items()})
        return out, curves
    return out


def summarize(per_category: Mapping[str, Mapping[str, float | None]]) -> dict[str, dict]:
    """Copy of ``per_category`` plus ``"mean"``: the unweighted mean over categories of each key.

    A key's mean is None when any category lacks a number for it (never a mean over a subset).
    """
    cats = {k: dict(v) for k, v in per_category.items() if k != MEAN}
    if not cats:
        raise MetricError("no category results to summarize; evaluate at least one category.")
    keys: list[str] = []
    for res in cats.values():
        keys.extend(k for k in res if k not in keys)
    mean: dict[str, float | None] = {}
    for key in keys:
        vals = [res.get(key) for res in cats.values()]
        ok = all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals)
        mean[key] = float(np.mean(vals)) if ok else None
    return {**cats, MEAN: mean}


def _columns(results: Mapping[str, Mapping]) -> list[str]:
    present = {k for res in results.values() for k, v in res.items() if v is not None}
    cols = [k for k in KEYS if k in present]
    extra = sorted(
        k
        for k in present - set(KEYS)
        if all(isinstance(r.get(k), int | float | type(None)) for r in results.values())
    )
    return cols + extra


def format_table(results: Mapping[str, Mapping[str, float | None]], digits: int = 2) -> str:
    """Fixed-width table: one row per category and the mean, values in % (``-`` = not computed)."""
    res = results if MEAN in results else summarize(results)
    cols = _columns(res)
    names = [k for k in res if k != MEAN] + [MEAN]
    w0 = max(len("category"), *(len(n) for n in names))
    widths = [max(len(_HEADERS.get(c, c)), digits + 4) for c in cols]

    def cell(v: float | None, w: int) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-".rjust(w)
        return f"{100.0 * v:{w}.{digits}f}"

    head = "category".ljust(w0) + "".join(
        "  " + _HEADERS.get(c, c).rjust(w) for c, w in zip(cols, widths, strict=True)
    )
    lines = [head, "-" * len(head)]
    for name in names:
        if name == MEAN:
            lines.append("-" * len(head))
        row = res[name]
        lines.append(
            name.ljust(w0)
            + "".join("  " + cell(row.get(c), w) for c, w in zip(cols, widths, strict=True))
        )
    return "\n".join(lines)


def write_results(
    results: Mapping[str, Mapping[str, float | None]],
    out_dir: str | os.PathLike,
    stem: str = "metrics",
) -> tuple[Path, Path]:
    """Write ``<out_dir>/<stem>.json`` and ``<stem>.csv`` atomically (temp file + ``os.replace``).

    ``results`` is ``{category: {key: fraction}}``; a ``"mean"`` row is added if missing. Values
    are stored as fractions (None -> JSON null / empty CSV cell). Returns ``(json_path, csv_path)``.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise MetricError(f"output path {out} exists and is not a directory; pass a directory.")
    if not stem or os.sep in stem or (os.altsep and os.altsep in stem):
        raise MetricError(f"stem={stem!r} must be a plain file name without a directory part.")
    out.mkdir(parents=True, exist_ok=True)
    res = results if MEAN in results else summarize(results)
    json_path, csv_path = out / f"{stem}.json", out / f"{stem}.csv"
    write_text(json_path, dumps_json(res))
    cols = _columns(res)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["category", *cols])
    for name, row in res.items():
        writer.writerow([name, *("" if row.get(c) is None else repr(float(row[c])) for c in cols)])
    write_text(csv_path, buf.getvalue())
    return json_path, csv_path
