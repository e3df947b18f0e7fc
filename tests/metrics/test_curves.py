"""The curves behind the metrics: their areas are the metrics (same counts, ties merged)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from jad import metrics
from jad.metrics import PixelAccumulator, ranking_curves, ranking_metrics
from jad.metrics.ranking import thin_curve


def _case(seed: int, n: int = 5000, decimals: int | None = 1):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.2
    s = rng.normal(size=n) + 1.0 * y
    return y, (np.round(s, decimals) if decimals is not None else s)


@pytest.mark.parametrize("seed,decimals", [(0, 1), (1, None), (2, 0)])
def test_roc_and_pr_areas_are_the_metrics(seed, decimals):
    y, s = _case(seed, decimals=decimals)
    c = ranking_curves(y, s)
    r = ranking_metrics(y, s)
    assert np.all(np.diff(c["roc_fpr"]) >= 0) and np.all(np.diff(c["roc_tpr"]) >= 0)
    assert (c["roc_fpr"][0], c["roc_tpr"][0], c["roc_fpr"][-1], c["roc_tpr"][-1]) == (0, 0, 1, 1)
    assert abs(np.trapezoid(c["roc_tpr"], c["roc_fpr"]) - r["auroc"]) < 1e-12
    ap = float(np.sum(np.diff(c["pr_recall"], prepend=0.0) * c["pr_precision"]))
    assert abs(ap - r["ap"]) < 1e-12
    p, rec = c["pr_precision"], c["pr_recall"]
    assert abs(np.max(2 * p * rec / (p + rec)) - r["f1_max"]) < 1e-12


def test_roc_curve_passes_through_sklearns_points():
    """Every point of sklearn's ROC lies on jad's curve (jad's vertices are the positive scores;
    sklearn also has one at each negative-only score, on a horizontal stretch of jad's curve)."""
    y, s = _case(3, decimals=1)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    c = ranking_curves(y, s)
    a = np.stack([c["roc_fpr"][:-1], c["roc_tpr"][:-1]], 1)[None]  # segment starts [1, S, 2]
    b = np.stack([c["roc_fpr"][1:], c["roc_tpr"][1:]], 1)[None]
    p = np.stack([fpr, tpr], 1)[:, None]  # [P, 1, 2]
    ab = b - a
    t = np.clip(np.sum((p - a) * ab, -1) / np.maximum(np.sum(ab * ab, -1), 1e-300), 0, 1)
    dist = np.linalg.norm(a + t[..., None] * ab - p, axis=-1).min(1)
    assert dist.max() < 1e-12


def test_pixel_and_pro_curves_are_the_accumulator_metrics():
    rng = np.random.default_rng(0)
    masks = np.zeros((6, 32, 32), np.uint8)
    masks[1, 4:10, 4:12] = 1
    masks[2, 20:30, 3:6] = 1
    masks[2, 2:4, 25:30] = 1
    masks[4, 10:20, 10:20] = 1
    maps = (rng.normal(size=masks.shape) + 1.5 * masks).astype(np.float32)
    acc = PixelAccumulator(32, 32)
    acc.add(masks, maps)
    m = acc.compute(0.3)
    c = acc.curves(0.3, max_points=None)
    assert abs(np.trapezoid(c["roc_tpr"], c["roc_fpr"]) - m["pixel_auroc"]) < 1e-9
    ap = float(np.sum(np.diff(c["pr_recall"], prepend=0.0) * c["pr_precision"]))
    assert abs(ap - m["pixel_ap"]) < 1e-9
    assert c["pro_fpr"][-1] == pytest.approx(0.3) and np.all(np.diff(c["pro_fpr"]) >= 0)
    assert abs(np.trapezoid(c["pro_pro"], c["pro_fpr"]) / 0.3 - m["aupro"]) < 1e-9
    assert abs(m["aupro"] - metrics.aupro(masks, maps, 0.3)) < 1e-12
    thinned = acc.curves(0.3, max_points=50)
    assert all(v.size <= 50 for v in thinned.values())
    assert thinned["roc_fpr"][-1] == 1.0 and thinned["pro_fpr"][-1] == pytest.approx(0.3)


def test_evaluate_category_returns_the_curves_of_its_numbers():
    rng = np.random.default_rng(1)
    labels = np.array([0, 0, 1, 1, 0, 1])
    masks = np.zeros((6, 16, 16), np.uint8)
    masks[2, 3:8, 3:8] = masks[3, 10:14, 1:5] = masks[5, 0:4, 12:16] = 1
    maps = (rng.normal(size=masks.shape) + masks).astype(np.float32)
    scores = maps.reshape(6, -1).max(1)
    res, curves = metrics.evaluate_category(labels, scores, masks, maps, return_curves=True)
    assert res == metrics.evaluate_category(labels, scores, masks, maps)
    area = np.trapezoid(curves["image_roc_tpr"], curves["image_roc_fpr"])
    assert abs(area - res["image_auroc"]) < 1e-12
    assert abs(np.trapezoid(curves["pro_pro"], curves["pro_fpr"]) / 0.3 - res["aupro"]) < 1e-9
    _, only_image = metrics.evaluate_category(labels, scores, return_curves=True)
    assert sorted(only_image) == sorted(k for k in curves if k.startswith("image_"))


def test_thin_curve_keeps_the_ends():
    x = np.linspace(0, 1, 10_001)
    tx, ty = thin_curve(x, x**2, 100)
    assert tx.size <= 100 and tx[0] == 0 and tx[-1] == 1 and np.all(ty == tx**2)
