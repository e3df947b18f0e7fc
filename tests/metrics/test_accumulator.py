"""PixelAccumulator: batches equal the one-shot computation, growth, re-use, errors."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from jad.metrics import MetricError, PixelAccumulator, aupro, ranking_metrics


def data(seed=0, n=12, h=20, w=24):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, h, w), np.float32)
    for i in range(0, n, 2):
        y, x = rng.integers(0, h - 5), rng.integers(0, w - 5)
        masks[i, y : y + 4, x : x + 5] = 1.0
    maps = (rng.random(masks.shape) + 0.6 * masks).astype(np.float32)
    return masks, np.round(maps, 2)


def test_batches_equal_one_shot_and_sklearn():
    masks, maps = data()
    acc = PixelAccumulator(20, 24, capacity=2)  # forces regrowth of every buffer
    for start in range(0, len(masks), 5):
        acc.add(masks[start : start + 5], maps[start : start + 5])
    got = acc.compute()
    r = ranking_metrics(masks, maps)
    assert got["pixel_auroc"] == r["auroc"]
    assert got["pixel_f1_max"] == r["f1_max"]
    assert got["pixel_ap"] == pytest.approx(r["ap"], abs=1e-12)
    assert got["aupro"] == pytest.approx(aupro(masks, maps), abs=1e-12)
    y, s = masks.ravel() != 0, maps.ravel()
    assert got["pixel_auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-9)
    assert got["pixel_ap"] == pytest.approx(average_precision_score(y, s), abs=1e-9)
    assert acc.n_images == 12 and acc.n_pixels == masks.size and acc.n_regions == 6


def test_compute_twice_and_add_after_compute():
    masks, maps = data(1)
    acc = PixelAccumulator(20, 24)
    acc.add(masks[:6], maps[:6])
    first = acc.compute()
    assert acc.compute() == first  # in-place sort is idempotent
    acc.add(masks[6:], maps[6:])
    full = PixelAccumulator(20, 24, capacity=12)
    full.add(masks, maps)
    assert acc.compute()["aupro"] == pytest.approx(full.compute()["aupro"], abs=1e-12)
    assert acc.ranking()["auroc"] == full.ranking()["auroc"]


def test_single_images_and_float64_storage():
    masks, maps = data(2)
    maps64 = maps.astype(np.float64) + 1e-12 * np.arange(maps.size).reshape(maps.shape)
    acc = PixelAccumulator(20, 24, dtype=np.float64)
    for m, s in zip(masks, maps64, strict=True):
        acc.add(m, s)
    assert acc.aupro() == pytest.approx(aupro(masks, maps64), abs=1e-12)
    assert acc.ranking()["auroc"] == pytest.approx(
        roc_auc_score(masks.ravel(), maps64.ravel()), abs=1e-9
    )


def test_memory_is_about_one_float32_copy():
    masks, maps = data(3)
    acc = PixelAccumulator(20, 24, capacity=12)
    acc.add(masks, maps)
    assert acc.nbytes <= maps.nbytes * 1.0 + 8 * 20 * 24 * 12 / 16 + 8 * 1024  # ok + defect buffers


def test_errors():
    masks, maps = data(4)
    acc = PixelAccumulator(20, 24)
    with pytest.raises(MetricError, match=r"\[B, 20, 24\]"):
        acc.add(masks[:, :10], maps[:, :10])
    with pytest.raises(MetricError, match="no defect pixel"):
        acc.ranking()
    acc.add(np.zeros_like(masks[:2]), maps[:2])
    with pytest.raises(MetricError, match="no defect region"):
        acc.aupro()
    with pytest.raises(MetricError, match="NaN"):
        acc.add(np.full_like(masks[:1], np.nan), maps[:1])
    with pytest.raises(MetricError, match="h, w > 0"):
        PixelAccumulator(0, 24)
