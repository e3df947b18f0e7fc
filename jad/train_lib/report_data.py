"""What an evaluation keeps for the report: ``<workdir>/<category>/report_data.npz``.

The report (``jad.report``) must not re-run a model, and a workdir must not grow with the test
set's maps, so the evaluation, which holds every score, map and mask anyway, writes per category:

- ``paths`` [N] str, ``labels`` [N] int8, ``scores`` [N] float32: the test images' raw scores;
- the curves of :func:`jad.metrics.evaluate_category` (``image_roc_fpr`` ... ``pro_pro``; the
  image curves with every point, the pixel curves thinned to 1000 points for drawing);
- gallery panels for the images the report shows (:func:`gallery`): the highest-scoring good and
  the lowest-scoring defective images (the likely false alarms and misses), plus the clearest
  cases, as image | heat map | overlay | ground truth | predicted mask, :data:`THUMB` px high;
  ``panel_index`` [G] says which test image each ``panels`` [G, THUMB, W, 3] row shows;
- ``colour_range`` [2]: the heat maps' shared colour scale (as in ``<category>/heatmaps``).

Size: about 0.3-2 MB per category (compressed), whatever the test set's size beyond its scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from jad.train_lib import heatmaps
from jad.utils.atomic import atomic_file

FILE = "report_data.npz"
THUMB = 112  # panel height in px (each of the five tiles is THUMB x THUMB)
WORST = 6  # false-alarm and miss candidates per category
CLEAREST = 2  # clearest cases per class


def gallery(labels: np.ndarray, scores: np.ndarray) -> dict[str, np.ndarray]:
    """Indices of the images the report shows, by score only (the decisions come later).

    Returns int64 arrays: ``good_highest`` (good images, highest score first: false alarms come
    first), ``defective_lowest`` (defective, lowest first: misses first), ``defective_highest``
    and ``good_lowest`` (the clearest cases). Ties keep the test order.
    """
    labels, scores = np.asarray(labels).reshape(-1), np.asarray(scores).reshape(-1)
    good, bad = np.flatnonzero(labels == 0), np.flatnonzero(labels != 0)
    good_desc = good[np.argsort(-scores[good], kind="stable")]
    bad_asc = bad[np.argsort(scores[bad], kind="stable")]
    return {
        "good_highest": good_desc[:WORST],
        "defective_lowest": bad_asc[:WORST],
        "defective_highest": bad_asc[::-1][:CLEAREST],
        "good_lowest": good_desc[::-1][:CLEAREST],
    }


def thumbnail(image_uint8: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] -> [THUMB, THUMB, 3] (PIL bilinear, antialiased when shrinking)."""
    return np.asarray(Image.fromarray(image_uint8).resize((THUMB, THUMB), Image.BILINEAR))


def _thumb_map(amap: np.ndarray) -> np.ndarray:
    img = Image.fromarray(np.asarray(amap, np.float32), mode="F")
    return np.asarray(img.resize((THUMB, THUMB), Image.BILINEAR), np.float32)


def _thumb_mask(mask: np.ndarray) -> np.ndarray:
    """A thumbnail pixel is set when any full-resolution pixel under it is (box filter > 0), so
    thin defects and small predicted regions stay visible."""
    img = Image.fromarray((np.asarray(mask) != 0).astype(np.uint8) * np.uint8(255))
    return np.asarray(img.resize((THUMB, THUMB), Image.BOX)) > 0


def save(
    path: Path,
    *,
    paths: list[str],
    labels: np.ndarray,
    scores: np.ndarray,
    curves: dict[str, np.ndarray],
    thumbs: np.ndarray,
    maps: np.ndarray,
    masks: np.ndarray | None,
    calibration: dict[str, Any] | None,
) -> Path:
    """Write ``path`` (atomic). ``thumbs`` [N, THUMB, THUMB, 3] uint8 test images, ``maps``
    [N, H, W] float32 full-resolution anomaly maps, ``masks`` [N, H, W] or None."""
    idx = gallery(labels, scores)
    shown = np.unique(np.concatenate(list(idx.values()))).astype(np.int64)
    vmin, vmax = heatmaps.colour_range(maps)
    px_thr = None if calibration is None else calibration.get("pixel_threshold")
    panels = [
        heatmaps.panel(
            thumbs[j],
            _thumb_map(maps[j]),
            vmin=vmin,
            vmax=vmax,
            mask=None if masks is None else _thumb_mask(masks[j]),
            pred_mask=None if px_thr is None else _thumb_mask(maps[j] > px_thr),
        )
        for j in shown
    ]
    arrays = {
        "paths": np.asarray(paths, dtype=np.str_),
        "labels": np.asarray(labels, np.int8),
        "scores": np.asarray(scores, np.float32),
        "colour_range": np.asarray([vmin, vmax], np.float64),
        "panel_index": shown,
        "panels": np.stack(panels) if panels else np.zeros((0, THUMB, THUMB, 3), np.uint8),
        **{f"gallery_{k}": v for k, v in idx.items()},
        **{f"curve_{k}": np.asarray(v, np.float64) for k, v in curves.items()},
    }
    with atomic_file(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return Path(path)


def load(path: Path) -> dict[str, Any]:
    """The arrays of :func:`save`: ``curves`` and ``gallery`` as dicts, ``panels`` by test index."""
    with np.load(path, allow_pickle=False) as z:
        d = {k: z[k] for k in z.files}
    return {
        "paths": [str(p) for p in d["paths"]],
        "labels": d["labels"].astype(np.int64),
        "scores": d["scores"],
        "colour_range": tuple(float(v) for v in d["colour_range"]),
        "panels": {int(j): p for j, p in zip(d["panel_index"], d["panels"], strict=True)},
        "gallery": {k[8:]: d[k].astype(np.int64) for k in d if k.startswith("gallery_")},
        "curves": {k[6:]: d[k] for k in d if k.startswith("curve_")},
    }
