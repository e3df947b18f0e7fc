"""Exact evaluation metrics: image/pixel AUROC, AP, F1-max, MVTec AU-PRO, per-category tables.

Everything is numpy (float64 accumulation, int64 counts), exact (every distinct score is a
threshold, ties merged) and memory-bounded (one copy of the scores, sorted in place; no int64
argsort over all pixels). Semantics: AUROC = ``sklearn.metrics.roc_auc_score``; AP =
``sklearn.metrics.average_precision_score``; F1-max = max F1 over ``score >= t``; AU-PRO = the
official MVTec AD evaluation script (8-connected regions, FPR limit 0.3, interpolated at the limit).
``pro_simplenet_style`` (paper parity only) and ``BinnedAUROC`` (approximate, with an error bound)
are labelled as such.
"""

from jad.metrics.accumulator import PixelAccumulator
from jad.metrics.binned import BinnedAUROC, binned_auroc
from jad.metrics.calibration import calibrate, normalise, threshold_metrics
from jad.metrics.errors import MetricError
from jad.metrics.evaluate import KEYS, evaluate_category, format_table, summarize, write_results
from jad.metrics.pro import aupro, pro_simplenet_style
from jad.metrics.ranking import (
    auroc,
    average_precision,
    f1_max,
    ranking_curves,
    ranking_metrics,
)

__all__ = [
    "KEYS",
    "BinnedAUROC",
    "MetricError",
    "PixelAccumulator",
    "aupro",
    "auroc",
    "average_precision",
    "binned_auroc",
    "calibrate",
    "evaluate_category",
    "f1_max",
    "format_table",
    "normalise",
    "pro_simplenet_style",
    "ranking_curves",
    "ranking_metrics",
    "summarize",
    "threshold_metrics",
    "write_results",
]
