"""AU-PRO: the exact official MVTec AD algorithm, and the SimpleNet/PBAS variant for paper parity.

Exact AU-PRO (MVTec ``pro_curve_util.compute_pro`` + ``generic_util.trapezoid``), stated as sums:

- regions: connected components of ``mask != 0`` per image (8-connectivity by default);
  R = number of regions over all images, each region weighs 1/R whatever its size;
- OK pixels (outside every region, all pixels of good images) feed the FPR;
- for every distinct score t (descending, ties merged): FPR(t) = #OK >= t / #OK,
  PRO(t) = (1/R) * sum over defect pixels >= t of 1/|region of the pixel|;
- curve (0,0) + points + (1,1), trapezoid up to FPR = L with PRO linearly interpolated at L,
  divided by L.

FPR only moves at scores held by OK pixels and PRO only at scores held by defect pixels, so the
area is a sum over the distinct OK scores u (taken from the sorted OK scores) of
``(FPR(u) - FPR(>u)) * (PRO(>u) + PRO(u)) / 2``; the segments between them are vertical. Only the
OK scores with FPR(>u) < L are visited. Counts are int64 and the region weights are summed in
float64 (the official script divides uint32 counts in float32; the difference is < 1e-7).
Memory: the OK scores once (sorted in place), 8 B per defect pixel, ~100 MB of block temporaries.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy import ndimage

from jad.metrics.errors import MetricError
from jad.metrics.ranking import iter_runs


def structure(connectivity: int) -> np.ndarray:
    """3x3 structuring element of ``scipy.ndimage.label`` for 8- or 4-connectivity."""
    if connectivity == 8:
        return np.ones((3, 3), np.int8)
    if connectivity == 4:
        return ndimage.generate_binary_structure(2, 1).astype(np.int8)
    raise MetricError(f"connectivity={connectivity!r} is not supported; use 8 (MVTec) or 4.")


def check_limit(limit: float) -> float:
    limit = float(limit)
    if not 0.0 < limit <= 1.0:
        raise MetricError(f"limit={limit} must lie in (0, 1]; the MVTec default is 0.3.")
    return limit


def check_pixel_arrays(masks: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``masks``/``maps`` as [N, H, W] (a single [H, W] image is promoted)."""
    masks, maps = np.asarray(masks), np.asarray(maps)
    if masks.ndim == 2 and maps.ndim == 2:
        masks, maps = masks[None], maps[None]
    if masks.ndim != 3 or masks.shape != maps.shape:
        raise MetricError(
            f"masks {masks.shape} and anomaly maps {maps.shape} must both be [N, H, W] with the "
            "same shape; resize the maps (or masks) to one resolution first."
        )
    if masks.size == 0:
        raise MetricError("masks and anomaly maps are empty; pass at least one image.")
    return masks, maps


def _pro_segments(
    ok: np.ndarray, defect: np.ndarray, weight_cumsum: np.ndarray, limit: float
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The PRO curve below FPR = ``limit`` as segments, one per distinct OK score u.

    Yields per block ``(f0, f1, p0, p1)``: the segment from (FPR(>u), PRO(>u)) to (FPR(u),
    PRO(u)); a segment crossing the limit ends at it with PRO linearly interpolated. Blocks come
    in ascending u (descending FPR). Between segments the curve is vertical (FPR only moves at
    OK scores), so they are the whole curve from FPR = 0 to ``limit``.
    """
    n_ok = ok.size
    assert n_ok > 0 and weight_cumsum.size == defect.size + 1, (ok.shape, defect.shape)
    total = weight_cumsum[-1]
    # Runs ending at index i have FPR(>u) = (n_ok - 1 - i) / n_ok; only those < L matter.
    first = max(0, int(np.floor(n_ok * (1.0 - limit))) - 2)
    for values, lo, hi in iter_runs(ok, first):
        f0 = (n_ok - hi) / n_ok
        f1 = np.minimum((n_ok - lo) / n_ok, 1.0)
        p0 = np.minimum(total - weight_cumsum[np.searchsorted(defect, values, "right")], 1.0)
        p1 = np.minimum(total - weight_cumsum[np.searchsorted(defect, values, "left")], 1.0)
        keep = f0 < limit
        f0, f1, p0, p1 = f0[keep], f1[keep], p0[keep], p1[keep]
        cross = f1 > limit
        if cross.any():
            p1 = p1.copy()
            p1[cross] = p0[cross] + (p1[cross] - p0[cross]) * (limit - f0[cross]) / (
                f1[cross] - f0[cross]
            )
            f1 = np.where(cross, limit, f1)
        yield f0, f1, p0, p1


def aupro_from_sorted(
    ok: np.ndarray, defect: np.ndarray, weight_cumsum: np.ndarray, limit: float = 0.3
) -> float:
    """Exact AU-PRO from sorted pixel scores.

    Args:
      ok: [N_ok] ascending scores of the OK pixels (N_ok > 0).
      defect: [N_def] ascending scores of the defect pixels.
      weight_cumsum: float64 [N_def + 1], ``c[k] = sum_{j<k} 1 / (R * |region(j)|)`` in the order
        of ``defect`` (``c[-1]`` is 1; :class:`PixelAccumulator` normalises it to exactly 1).
      limit: FPR integration limit L in (0, 1].

    Returns:
      The normalised area under the PRO curve up to FPR = L, in [0, 1] (the trapezoid area under
      :func:`pro_curve_from_sorted`, divided by L).
    """
    limit = check_limit(limit)
    area = 0.0
    for f0, f1, p0, p1 in _pro_segments(ok, defect, weight_cumsum, limit):
        area += float(np.sum((f1 - f0) * (p0 + p1))) / 2.0
    return area / limit


def pro_curve_from_sorted(
    ok: np.ndarray, defect: np.ndarray, weight_cumsum: np.ndarray, limit: float = 0.3
) -> tuple[np.ndarray, np.ndarray]:
    """The PRO curve whose area :func:`aupro_from_sorted` returns (same arguments).

    Returns:
      ``(fpr, pro)``: float64, from (0, 0) to FPR = ``limit`` (PRO interpolated there), FPR
      non-decreasing; each segment contributes its two end points.
    """
    limit = check_limit(limit)
    segs = list(_pro_segments(ok, defect, weight_cumsum, limit))
    if not segs:
        return np.zeros(1), np.zeros(1)
    f0, f1, p0, p1 = (np.concatenate([s[i] for s in segs])[::-1] for i in range(4))
    fpr = np.concatenate([[0.0], np.stack([f0, f1], 1).reshape(-1)])
    pro = np.concatenate([[0.0], np.stack([p0, p1], 1).reshape(-1)])
    return fpr, pro


def aupro(
    masks: np.ndarray, maps: np.ndarray, limit: float = 0.3, *, connectivity: int = 8
) -> float:
    """Exact MVTec AU-PRO of anomaly maps against ground-truth masks.

    Args:
      masks: [N, H, W] ground truth, any dtype; defect iff ``!= 0``. Good images are all zero.
      maps: [N, H, W] anomaly maps (float32 kept, float64 kept, narrower floats widened).
      limit: FPR integration limit L in (0, 1]; MVTec uses 0.3.
      connectivity: 8 (official, 3x3 ones) or 4.

    Returns:
      AU-PRO in [0, 1] (area / L). A constant map gives the diagonal pro = fpr, so AU-PRO = L / 2
      (0.15 for L = 0.3); a perfect map gives 1.0.

    Raises:
      MetricError: no defect region at all, no OK pixel, NaN scores, bad shapes or limit.
    """
    from jad.metrics.accumulator import PixelAccumulator

    masks, maps = check_pixel_arrays(masks, maps)
    check_limit(limit)
    acc = PixelAccumulator(
        maps.shape[1],
        maps.shape[2],
        capacity=maps.shape[0],
        dtype=np.float64 if maps.dtype == np.float64 else np.float32,
        connectivity=connectivity,
    )
    acc.add(masks, maps)
    return acc.aupro(limit)


def _float32_below(t: float) -> np.float32:
    """Largest float32 <= t: for float32 x, ``x > t`` iff ``x > _float32_below(t)``."""
    t32 = np.float32(t)
    if float(t32) > t:
        t32 = np.nextafter(t32, np.float32(-np.inf))
    return t32


def pro_simplenet_style(
    masks: np.ndarray, maps: np.ndarray, num_thresholds: int = 200, max_fpr: float = 0.3
) -> float:
    """PRO as SimpleNet / GLASS / PBAS ``metrics.compute_pro`` compute it (paper parity ONLY).

    Not the MVTec AU-PRO and not comparable with it (it is inflated): thresholds
    ``np.arange(min, max, (max - min) / num_thresholds)`` over all maps, predictions
    ``score > t``; each image's prediction is dilated with a 5x5 square before the per-region
    overlap (not for the FPR); regions are 8-connected components of ``mask != 0``;
    PRO(t) = mean overlap over all regions of all images, FPR(t) = #OK pixels > t / #OK; points
    with FPR < ``max_fpr`` are kept, their FPR min-max rescaled (``/(max - min + 1e-10)``), and the
    trapezoid taken (``sklearn.metrics.auc``). The official code casts float masks with
    ``astype(int)`` (only 1.0 is a defect); pass ``masks == 1`` to reproduce that.

    Dilating ``score > t`` with a flat 5x5 square equals thresholding the 5x5 maximum filter of
    the map, so every threshold is answered from one sorted array (no per-threshold dilation).

    Args:
      masks: [N, H, W], defect iff ``!= 0``.
      maps: [N, H, W] anomaly maps.
      num_thresholds: grid size (200 in the official code).
      max_fpr: FPR cut (0.3).

    Returns:
      The SimpleNet-style PRO in [0, 1].
    """
    masks, maps = check_pixel_arrays(masks, maps)
    dtype = np.float64 if maps.dtype == np.float64 else np.float32
    maps = maps.astype(dtype, copy=False)
    lo_t, hi_t = maps.min(), maps.max()
    if np.isnan(lo_t) or np.isnan(hi_t):
        raise MetricError(
            "anomaly maps contain NaN; replace or drop them before computing metrics."
        )
    if not hi_t > lo_t:
        raise MetricError("anomaly maps are constant; the SimpleNet-style PRO needs a score range.")
    thresholds = np.arange(lo_t, hi_t, (hi_t - lo_t) / num_thresholds)

    ok_parts, dil_parts, w_parts = [], [], []
    n_regions = 0
    struct = structure(8)
    for mask, amap in zip(masks, maps, strict=True):
        m = mask != 0
        ok_parts.append(amap[~m])
        if not m.any():
            continue
        lab, n = ndimage.label(m, struct)
        d = lab[m]
        dil = ndimage.maximum_filter(amap, size=5, mode="nearest")
        dil_parts.append(dil[m])
        w_parts.append(1.0 / np.bincount(d)[d])
        n_regions += n
    if n_regions == 0:
        raise MetricError("masks contain no defect pixel; PRO needs at least one defect region.")
    ok = np.sort(np.concatenate(ok_parts))
    if ok.size == 0:
        raise MetricError("masks contain no OK pixel; the FPR of PRO is undefined.")
    dil = np.concatenate(dil_parts)
    order = np.argsort(dil, kind="stable")
    dil = dil[order]
    csum = np.concatenate([[0.0], np.cumsum(np.concatenate(w_parts)[order])])

    if dtype == np.float32:  # compare float32 data with float64 thresholds exactly
        keys = np.array([_float32_below(float(t)) for t in thresholds], np.float32)
    else:
        keys = thresholds
    fpr = (ok.size - np.searchsorted(ok, keys, "right")) / ok.size
    pro = (csum[-1] - csum[np.searchsorted(dil, keys, "right")]) / n_regions
    keep = fpr < max_fpr
    fpr, pro = fpr[keep], pro[keep]
    if fpr.size < 2:
        raise MetricError(
            f"only {fpr.size} threshold(s) give FPR < {max_fpr}; the SimpleNet-style PRO needs two."
        )
    fpr = (fpr - fpr.min()) / (fpr.max() - fpr.min() + 1e-10)
    return float(abs(np.trapezoid(pro, fpr)))
