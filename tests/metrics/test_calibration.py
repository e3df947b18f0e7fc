"""Thresholds and normalised scores from normal data only (jad.metrics.calibration)."""

from __future__ import annotations

import numpy as np
import pytest

from jad import metrics as jm
from jad.metrics.calibration import conformal_threshold, f1_threshold, normaliser


def test_conformal_threshold_controls_the_false_alarm_rate():
    rng = np.random.default_rng(0)
    # over many draws of 200 calibration + 2000 new normals, flagged fraction <= fpr on average
    rates = []
    for seed in range(40):
        r = np.random.default_rng(seed)
        t, guaranteed = conformal_threshold(r.normal(size=200), 0.05)
        assert guaranteed == 0.05
        rates.append(np.mean(r.normal(size=2000) > t))
    assert np.mean(rates) <= 0.05 + 0.005
    # with n normals no rate below 1 / (n + 1) can be promised: the max is used and reported
    s = rng.normal(size=9)
    t, guaranteed = conformal_threshold(s, 0.01)
    assert t == s.max() and guaranteed == pytest.approx(0.1)
    with pytest.raises(jm.MetricError):
        conformal_threshold(np.array([]), 0.01)


def test_normalisation_is_monotone_threshold_maps_to_half_and_keeps_ranking_metrics():
    rng = np.random.default_rng(1)
    normal = rng.gamma(2.0, 1.0, 300)
    t, _ = conformal_threshold(normal, 0.05)
    p = normaliser(normal, t)
    assert jm.normalise(np.array([t]), p)[0] == pytest.approx(0.5)
    assert jm.normalise(np.array([np.median(normal)]), p)[0] == pytest.approx(0.1, abs=1e-6)
    x = np.sort(rng.gamma(2.0, 2.0, 1000))
    y = jm.normalise(x, p)
    assert np.all(np.diff(y) >= 0)
    labels = rng.random(1000) < 0.3
    scores = np.where(labels, rng.gamma(3, 2, 1000), rng.gamma(2, 1, 1000))
    for f in (jm.auroc, jm.average_precision):
        assert f(labels, jm.normalise(scores, p)) == pytest.approx(f(labels, scores), abs=1e-12)
    masks = np.zeros((4, 16, 16), np.uint8)
    masks[1, 4:9, 4:9] = 1
    masks[3, 10:14, 2:6] = 1
    maps = rng.gamma(2, 1, (4, 16, 16)) + 2.0 * masks
    pn = normaliser(maps, float(np.quantile(maps, 0.9)))
    assert jm.aupro(masks, jm.normalise(maps, pn)) == pytest.approx(jm.aupro(masks, maps), abs=1e-9)


def test_f1_threshold_and_threshold_metrics():
    normal = np.array([0.1, 0.2, 0.3, 0.35])
    anomalies = np.array([0.34, 0.6, 0.9])
    t, f1 = f1_threshold(normal, anomalies)
    # > 0.3 flags all 3 anomalies and one normal: F1 6/7 beats > 0.35 (2 of 3, no false alarm: 4/5)
    assert t == pytest.approx(0.3) and f1 == pytest.approx(6 / 7)
    m = jm.threshold_metrics(np.r_[np.zeros(4), np.ones(3)], np.r_[normal, anomalies], t)
    assert m == pytest.approx(
        {"f1": 6 / 7, "precision": 0.75, "recall": 1.0, "false_alarm_rate": 0.25, "threshold": t}
    )
    m = jm.threshold_metrics(np.r_[np.zeros(4), np.ones(3)], np.r_[normal, anomalies], 0.35)
    assert m["f1"] == pytest.approx(0.8) and m["false_alarm_rate"] == 0.0


def test_calibrate_record_with_and_without_anomalies():
    rng = np.random.default_rng(2)
    img, px = rng.normal(size=20), rng.normal(size=(20, 8, 8))
    c = jm.calibrate(img, px, image_fpr=0.1, pixel_fpr=0.01)
    assert c["image_threshold"] == c["image_threshold_fpr"] and "image_threshold_f1" not in c
    assert c["holdout_images"] == 20 and np.mean(px > c["pixel_threshold"]) <= 0.01
    c2 = jm.calibrate(img, None, anomaly_scores=img.max() + 1 + rng.random(5))
    assert c2["image_threshold"] == c2["image_threshold_f1"] and "pixel_threshold" not in c2
    assert c2["image_threshold_rule"].startswith("max F1 on 20 held-out normals + 5 labelled")
