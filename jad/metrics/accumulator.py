"""Streaming accumulator for pixel metrics: feed batches, compute exact metrics once at the end.

Pixel AUROC / AP / F1-max and AU-PRO need only the multiset of OK-pixel scores and, for each defect
pixel, its score and the size of its connected region (regions never span images, so they are
labelled when an image is added). The accumulator therefore stores

- OK-pixel scores: one float32 buffer (4 B per OK pixel), sorted in place at compute time;
- defect-pixel scores (float32) + region sizes (int32): 8 B per defect pixel;

in preallocated buffers that grow by doubling (pass ``capacity`` to avoid any regrowth copy). The
mask itself is not stored: the split into OK/defect buffers is the label. Memory for a whole test
set is about 1x its float32 maps; computing adds O(block) temporaries plus 8 B per defect pixel.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from jad.metrics.errors import MetricError
from jad.metrics.pro import aupro_from_sorted, check_limit, pro_curve_from_sorted, structure
from jad.metrics.ranking import (
    check_no_nan_labels,
    curves_from_sorted,
    ranking_from_sorted,
    score_dtype,
    thin_curve,
)


def _room(buf: np.ndarray, used: int, need: int) -> np.ndarray:
    """``buf`` if it has ``need`` free slots after ``used``, else a doubled copy."""
    if used + need <= buf.size:
        return buf
    grown = np.empty(max(used + need, 2 * buf.size), buf.dtype)
    grown[:used] = buf[:used]
    return grown


class PixelAccumulator:
    """Collects (mask, map) batches of one category for exact pixel metrics.

    Example::

        acc = PixelAccumulator(224, 224, capacity=len(test_set))
        for masks, maps in batches:          # [B, 224, 224] each
            acc.add(masks, maps)
        acc.compute()  # {"pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro"}

    Args:
      h, w: map/mask size every batch must have.
      capacity: expected number of images (buffers preallocated for them; grows if exceeded).
      dtype: storage dtype of the scores (float32; float64 keeps float64 maps exact).
      connectivity: 8 (MVTec official) or 4, for the AU-PRO regions.
    """

    def __init__(
        self,
        h: int,
        w: int,
        capacity: int | None = None,
        *,
        dtype: np.dtype = np.float32,
        connectivity: int = 8,
    ) -> None:
        if h <= 0 or w <= 0 or (capacity is not None and capacity < 0):
            raise MetricError(
                f"PixelAccumulator(h={h}, w={w}, capacity={capacity}) needs h, w > 0."
            )
        self.h, self.w = int(h), int(w)
        self.dtype = score_dtype(dtype)
        self._struct = structure(connectivity)
        self.connectivity = connectivity
        cap = capacity if capacity is not None else 16
        self._ok = np.empty(max(cap, 1) * self.h * self.w, self.dtype)
        self._def = np.empty(max(cap * self.h * self.w // 16, 1024), self.dtype)
        self._size = np.empty(self._def.size, np.int32)
        self._n_ok = self._n_def = self._n_regions = self.n_images = 0
        self._sorted = True
        self._csum: np.ndarray | None = None

    @property
    def n_pixels(self) -> int:
        return self._n_ok + self._n_def

    @property
    def n_regions(self) -> int:
        return self._n_regions

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffers (allocated, not only used)."""
        return self._ok.nbytes + self._def.nbytes + self._size.nbytes

    def add(self, masks: np.ndarray, maps: np.ndarray) -> None:
        """Add a batch: ``masks`` [B, H, W] (defect iff ``!= 0``) and ``maps`` [B, H, W] scores.

        A single [H, W] image is accepted too. The maps are copied (cast to ``dtype``); the caller
        may reuse or free its arrays afterwards.
        """
        masks, maps = np.asarray(masks), np.asarray(maps)
        if masks.ndim == 2 and maps.ndim == 2:
            masks, maps = masks[None], maps[None]
        if masks.ndim != 3 or masks.shape != maps.shape or masks.shape[1:] != (self.h, self.w):
            raise MetricError(
                f"masks {masks.shape} and maps {maps.shape} must both be [B, {self.h}, {self.w}]; "
                "resize them to the accumulator's size."
            )
        check_no_nan_labels(masks, "masks")
        for mask, amap in zip(masks, maps, strict=True):
            m = mask != 0
            n_def = int(np.count_nonzero(m))
            n_ok = m.size - n_def
            self._ok = _room(self._ok, self._n_ok, n_ok)
            self._ok[self._n_ok : self._n_ok + n_ok] = amap[~m] if n_def else amap.reshape(-1)
            self._n_ok += n_ok
            if n_def:
                lab, n = ndimage.label(m, self._struct)
                d = lab[m]
                self._def = _room(self._def, self._n_def, n_def)
                self._size = _room(self._size, self._n_def, n_def)
                self._def[self._n_def : self._n_def + n_def] = amap[m]
                self._size[self._n_def : self._n_def + n_def] = np.bincount(d)[d]
                self._n_def += n_def
                self._n_regions += n
            self.n_images += 1
        self._sorted = False
        self._csum = None

    def _prepare(self) -> tuple[np.ndarray, np.ndarray]:
        """Sort the stored scores in place (once per batch of adds); return (ok, defect) views."""
        ok = self._ok[: self._n_ok]
        defect = self._def[: self._n_def]
        if not self._sorted:
            ok.sort()
            order = np.argsort(defect, kind="stable")
            defect[:] = defect[order]
            size = self._size[: self._n_def]
            size[:] = size[order]
            self._sorted = True
        for a, what in ((ok, "OK-pixel"), (defect, "defect-pixel")):
            if a.size and a.dtype.kind == "f" and np.isnan(a[-1]):
                raise MetricError(f"anomaly maps contain NaN at {what}s; replace them first.")
        return ok, defect

    def ranking(self) -> dict[str, float]:
        """Pixel AUROC / AP / F1-max (see :func:`jad.metrics.ranking_metrics` for the keys)."""
        if self._n_ok == 0 or self._n_def == 0:
            kind = "defect" if self._n_def == 0 else "OK"
            raise MetricError(
                f"the {self.n_images} accumulated images contain no {kind} pixel; pixel metrics "
                "need both classes (include defective and good images)."
            )
        ok, defect = self._prepare()
        return ranking_from_sorted(defect, ok)

    def aupro(self, limit: float = 0.3) -> float:
        """Exact MVTec AU-PRO up to FPR = ``limit`` (see :func:`jad.metrics.aupro`)."""
        ok, defect, csum = self._pro_inputs(limit)
        return aupro_from_sorted(ok, defect, csum, limit)

    def curves(self, limit: float = 0.3, max_points: int | None = 1000) -> dict[str, np.ndarray]:
        """The pixel ROC, precision-recall and PRO curves behind :meth:`compute`'s numbers.

        Returns float64 ``roc_fpr, roc_tpr`` and ``pr_recall, pr_precision`` (see
        :func:`jad.metrics.ranking.curves_from_sorted`) and ``pro_fpr, pro_pro`` up to FPR =
        ``limit`` (:func:`jad.metrics.pro.pro_curve_from_sorted`), each thinned to at most
        ``max_points`` points for drawing (None: every point).
        """
        self.ranking()  # the same checks as the metrics
        ok, defect = self._prepare()
        c = curves_from_sorted(defect, ok)
        pro = pro_curve_from_sorted(*self._pro_inputs(limit), limit)
        out: dict[str, np.ndarray] = {}
        for (kx, ky), (x, y) in {
            ("roc_fpr", "roc_tpr"): (c["roc_fpr"], c["roc_tpr"]),
            ("pr_recall", "pr_precision"): (c["pr_recall"], c["pr_precision"]),
            ("pro_fpr", "pro_pro"): pro,
        }.items():
            out[kx], out[ky] = (x, y) if max_points is None else thin_curve(x, y, max_points)
        return out

    def _pro_inputs(self, limit: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        limit = check_limit(limit)
        if self._n_regions == 0:
            raise MetricError(
                f"the {self.n_images} accumulated masks contain no defect region; AU-PRO needs at "
                "least one defective image with a non-empty mask."
            )
        if self._n_ok == 0:
            raise MetricError(
                "every accumulated pixel is a defect; the FPR of AU-PRO is undefined."
            )
        ok, defect = self._prepare()
        if self._csum is None:
            csum = np.empty(self._n_def + 1, np.float64)
            csum[0] = 0.0
            np.cumsum(1.0 / self._size[: self._n_def], out=csum[1:])
            # sum of 1/|region| over all defect pixels is R up to rounding; dividing by the
            # computed sum instead of R makes PRO exactly 1 once every defect pixel is in.
            csum /= csum[-1]
            self._csum = csum
        return ok, defect, self._csum

    def compute(self, limit: float = 0.3) -> dict[str, float]:
        """``{"pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro"}`` as fractions in [0, 1]."""
        r = self.ranking()
        return {
            "pixel_auroc": r["auroc"],
            "pixel_ap": r["ap"],
            "pixel_f1_max": r["f1_max"],
            "aupro": self.aupro(limit),
        }
