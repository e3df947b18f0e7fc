"""Thresholds and normalised scores from normal data only (numpy).

A method's raw scores live on scales that differ per category and per method (a squared distance
for PatchCore, a probability for PBAS). From held-out *normal* training images (never used to fit)
jad derives, per category:

- **image threshold** at a requested false-alarm rate ``fpr``: the conformal quantile of the
  held-out normal image scores, the k-th smallest with ``k = ceil((n + 1)(1 - fpr))``. A new normal
  image (exchangeable with the held-out ones) is then flagged (``score > threshold``) with
  probability at most ``fpr``. With n held-out images no rate below ``1 / (n + 1)`` can be
  guaranteed: then the largest held-out score is used and the rate achieved is recorded.
- optionally, with labelled training anomalies, the threshold that maximises F1 on the held-out
  normals + those anomalies (recorded as such; it becomes the decision threshold).
- **pixel threshold** likewise from all pixels of the held-out normals' maps.
- **normalised scores**: ``1 / (1 + exp(-(s - t) / w))`` with ``w = (t - m) / ln 9``, where t is the
  threshold and m the held-out normals' median: the threshold maps to 0.5, a typical normal (the
  median) to 0.1, and a score as far above the threshold as the median is below it to 0.9, on
  every category and method alike. The map is strictly increasing, so AUROC, AP and AU-PRO are
  unchanged (tested); raw scores are kept beside it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from jad.metrics.errors import MetricError

QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


def conformal_threshold(normal_scores: np.ndarray, fpr: float) -> tuple[float, float]:
    """(threshold, guaranteed false-alarm rate) from normal scores; flag ``score > threshold``."""
    s = np.sort(np.asarray(normal_scores, np.float64).ravel())
    n = s.size
    if n == 0:
        raise MetricError("no held-out normal scores to calibrate a threshold on")
    if not 0.0 < fpr < 1.0:
        raise MetricError(f"false-alarm rate {fpr} must be in (0, 1)")
    k = math.ceil((n + 1) * (1.0 - fpr))
    if k > n:  # fpr below 1 / (n + 1): the best the data can guarantee
        return float(s[-1]), 1.0 / (n + 1)
    return float(s[k - 1]), float(fpr)


def f1_threshold(normal_scores: np.ndarray, anomaly_scores: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximising F1 of ``score > threshold`` on normals (0) + anomalies (1);
    the lowest such threshold on ties."""
    s = np.concatenate(
        [np.asarray(normal_scores, np.float64), np.asarray(anomaly_scores, np.float64)]
    )
    y = np.concatenate([np.zeros(len(normal_scores)), np.ones(len(anomaly_scores))])
    if y.sum() == 0 or y.sum() == len(y):
        raise MetricError("an F1 threshold needs both normal and anomalous scores")
    cands = np.concatenate([[np.nextafter(s.min(), -np.inf)], np.unique(s)])
    best = (-1.0, float(cands[0]))
    for t in cands:
        pred = s > t
        tp = float(np.sum(pred & (y == 1)))
        f1 = 2 * tp / (pred.sum() + y.sum()) if pred.sum() + y.sum() else 0.0
        if f1 > best[0]:
            best = (f1, float(t))
    return best[1], best[0]


def normaliser(normal_scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Parameters of :func:`normalise` (threshold -> 0.5, median of the normals -> 0.1)."""
    s = np.asarray(normal_scores, np.float64).ravel()
    m = float(np.median(s))
    width = (threshold - m) / math.log(9.0)
    if not width > 0:  # degenerate (threshold at the median): fall back to the spread
        width = float(np.std(s)) or max(abs(threshold), 1.0) * 1e-6
    return {"threshold": float(threshold), "median": m, "width": float(width)}


def normalise(scores: np.ndarray, params: dict[str, float]) -> np.ndarray:
    """Strictly increasing map of raw scores to (0, 1): the threshold is 0.5 (float32)."""
    z = (np.asarray(scores, np.float64) - params["threshold"]) / params["width"]
    return (1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))).astype(np.float32)


def calibrate(
    image_scores: np.ndarray,
    pixel_scores: np.ndarray | None,
    *,
    image_fpr: float = 0.01,
    pixel_fpr: float = 0.01,
    anomaly_scores: np.ndarray | None = None,
) -> dict[str, Any]:
    """The calibration record of one category (JSON-able; stored with the model).

    Args:
      image_scores: [n] raw image scores of the held-out normal images.
      pixel_scores: their maps (any shape) or None (no pixel threshold).
      anomaly_scores: raw image scores of labelled training anomalies (refines the image
        threshold by F1), or None.
    """
    t_img, g_img = conformal_threshold(image_scores, image_fpr)
    out: dict[str, Any] = {
        "holdout_images": int(np.size(image_scores)),
        "image_fpr_requested": float(image_fpr),
        "image_fpr_guaranteed": g_img,
        "image_threshold_fpr": t_img,
        "image_threshold": t_img,
        "image_threshold_rule": (
            f"conformal quantile of {np.size(image_scores)} held-out normal image scores "
            f"(false alarms <= {100 * g_img:.2g} %)"
        ),
        "image_norm": normaliser(image_scores, t_img),
        "holdout_image_quantiles": [
            float(q) for q in np.quantile(np.asarray(image_scores, np.float64), QUANTILES)
        ],
    }
    if anomaly_scores is not None and np.size(anomaly_scores):
        t_f1, f1 = f1_threshold(image_scores, anomaly_scores)
        out.update(
            image_threshold=t_f1,
            image_threshold_f1=t_f1,
            image_threshold_f1_train=f1,
            image_threshold_rule=(
                f"max F1 on {np.size(image_scores)} held-out normals + {np.size(anomaly_scores)} "
                f"labelled training anomalies"
            ),
            image_norm=normaliser(image_scores, t_f1),
        )
    if pixel_scores is not None:
        px = np.asarray(pixel_scores, np.float32).ravel()
        t_px, g_px = conformal_threshold(px, pixel_fpr)
        out.update(
            pixel_fpr_requested=float(pixel_fpr),
            pixel_fpr_guaranteed=g_px,
            pixel_threshold=t_px,
            pixel_norm=normaliser(px, t_px),
            holdout_pixel_quantiles=[float(q) for q in np.quantile(px, QUANTILES)],
        )
    return out


def threshold_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Precision, recall, F1 and false-alarm rate of ``score > threshold`` (labels != 0 positive)."""
    y = np.asarray(labels).ravel() != 0
    pred = np.asarray(scores).ravel() > threshold
    tp = int(np.sum(pred & y))
    fp = int(np.sum(pred & ~y))
    fn = int(np.sum(~pred & y))
    n_neg = int(np.sum(~y))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return {
        "f1": f1,
        "precision": precision,
        "recall": recall,
        "false_alarm_rate": fp / n_neg if n_neg else 0.0,
        "threshold": float(threshold),
    }
