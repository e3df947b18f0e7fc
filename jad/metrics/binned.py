"""Streaming binned AUROC with a guaranteed error bound (an approximation; the exact metrics live
in :mod:`jad.metrics.ranking`).

With fixed bin edges, positives and negatives are histogrammed (int64 counts, O(bins) memory).
The trapezoid on the binned ROC equals the exact AUROC of the bin-quantised scores; only pairs
that share a bin can be ranked differently from the raw scores, and each such pair changes the
Mann-Whitney credit by at most 1/2, so ``|binned - exact| <= 1/2 * sum_b p_b * n_b`` with p_b, n_b
the fractions of positives / negatives in bin b (data_and_metrics.md section 2.10).
"""

from __future__ import annotations

import numpy as np

from jad.metrics.errors import MetricError
from jad.metrics.ranking import BLOCK, check_no_nan_labels


class BinnedAUROC:
    """Histogram-based AUROC over fixed ``edges`` (scores outside them go to the end bins).

    Args:
      edges: float [B + 1] strictly increasing bin edges; bin b is ``[edges[b], edges[b+1])``.
    """

    def __init__(self, edges: np.ndarray) -> None:
        edges = np.asarray(edges, np.float64)
        if edges.ndim != 1 or edges.size < 2 or not np.all(np.diff(edges) > 0):
            raise MetricError("edges must be a 1-D strictly increasing array of at least 2 values.")
        self.edges = edges
        self.pos = np.zeros(edges.size - 1, np.int64)
        self.neg = np.zeros(edges.size - 1, np.int64)

    def add(self, labels: np.ndarray, scores: np.ndarray) -> None:
        """Add samples: ``labels`` (positive iff ``!= 0``) and ``scores`` of equal size."""
        labels, scores = np.asarray(labels).reshape(-1), np.asarray(scores).reshape(-1)
        if labels.size != scores.size:
            raise MetricError(f"{labels.size} labels but {scores.size} scores; pass one per score.")
        check_no_nan_labels(labels)
        inner = self.edges[1:-1]
        for s in range(0, scores.size, BLOCK):
            sc = scores[s : s + BLOCK]
            if sc.dtype.kind == "f" and np.isnan(sc).any():
                raise MetricError(
                    "scores contain NaN; replace or drop them before computing metrics."
                )
            b = np.searchsorted(inner, sc, "right")
            m = labels[s : s + BLOCK] != 0
            self.pos += np.bincount(b[m], minlength=self.pos.size)
            self.neg += np.bincount(b[~m], minlength=self.neg.size)

    def compute(self) -> tuple[float, float]:
        """``(auroc, bound)``: AUROC of the bin-quantised scores and the bound on its error."""
        n_pos, n_neg = int(self.pos.sum()), int(self.neg.sum())
        if n_pos == 0 or n_neg == 0:
            raise MetricError("binned AUROC needs at least one positive and one negative sample.")
        neg_below = np.concatenate([[0], np.cumsum(self.neg)[:-1]])
        u2 = int(np.dot(self.pos, 2 * neg_below + self.neg))  # 2 * Mann-Whitney U, exact
        bound = 0.5 * float(np.dot(self.pos, self.neg)) / (n_pos * n_neg)
        return u2 / (2.0 * n_pos * n_neg), bound


def binned_auroc(labels: np.ndarray, scores: np.ndarray, edges: np.ndarray) -> tuple[float, float]:
    """One-shot :class:`BinnedAUROC`: ``(auroc, bound)`` with ``|auroc - exact| <= bound``."""
    acc = BinnedAUROC(edges)
    acc.add(labels, scores)
    return acc.compute()
