"""evaluate_category, summarize, format_table, write_results."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from jad.metrics import (
    KEYS,
    MetricError,
    aupro,
    evaluate_category,
    format_table,
    summarize,
    write_results,
)


def category(seed):
    rng = np.random.default_rng(seed)
    n, h, w = 10, 16, 16
    labels = np.arange(n) % 2
    masks = np.zeros((n, h, w), bool)
    for i in np.flatnonzero(labels):
        y, x = rng.integers(0, h - 4, size=2)
        masks[i, y : y + 3, x : x + 4] = True
    maps = (rng.random((n, h, w)) + 0.7 * masks).astype(np.float32)
    scores = maps.max(axis=(1, 2))
    return labels, scores, masks, maps


def test_evaluate_category_matches_each_metric():
    labels, scores, masks, maps = category(0)
    r = evaluate_category(labels, scores, masks, maps)
    assert tuple(r) == KEYS
    assert r["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    assert r["image_ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-9)
    assert r["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-9)
    assert r["pixel_ap"] == pytest.approx(
        average_precision_score(masks.ravel(), maps.ravel()), abs=1e-9
    )
    assert r["aupro"] == aupro(masks, maps)
    assert all(0.0 <= v <= 1.0 for v in r.values())


def test_t4_pooled_pixels_through_evaluate():
    mask_a = np.array([[1, 1, 0], [0, 0, 1]])
    masks = np.stack([mask_a, np.zeros_like(mask_a)]).astype(np.float32)
    maps = np.array([[[0.9, 0.45, 0.3], [0.1, 0.4, 0.8]], [[0.7, 0.05, 0.15], [0.25, 0.35, 0.5]]])
    r = evaluate_category([1, 0], [0.9, 0.7], masks, maps)
    assert r["pixel_auroc"] == pytest.approx(25 / 27, abs=1e-12)
    assert r["pixel_ap"] == pytest.approx(13 / 15, abs=1e-12)
    assert r["pixel_f1_max"] == pytest.approx(0.8, abs=1e-12)
    assert r["aupro"] == pytest.approx(61 / 81, abs=1e-12)


def test_image_only_and_argument_errors():
    labels, scores, masks, maps = category(1)
    r = evaluate_category(labels, scores)
    assert r["pixel_auroc"] is None and r["aupro"] is None and r["image_auroc"] is not None
    with pytest.raises(MetricError, match="maps is None"):
        evaluate_category(labels, scores, masks, None)
    with pytest.raises(MetricError, match="one mask and one map per test image"):
        evaluate_category(labels, scores, masks[:-1], maps[:-1])
    with pytest.raises(MetricError, match="all 10 labels are negatives"):
        evaluate_category(np.zeros(10), scores)


def test_summarize_mean_and_missing_values():
    a = evaluate_category(*category(2))
    b = evaluate_category(*category(3))
    c = evaluate_category(*category(4)[:2])
    s = summarize({"bottle": a, "cable": b})
    for k in KEYS:
        assert s["mean"][k] == pytest.approx((a[k] + b[k]) / 2, abs=1e-15)
    s2 = summarize({"bottle": a, "screw": c})
    assert s2["mean"]["pixel_auroc"] is None  # never a mean over a subset of categories
    assert s2["mean"]["image_auroc"] == pytest.approx((a["image_auroc"] + c["image_auroc"]) / 2)
    with pytest.raises(MetricError, match="no category"):
        summarize({})


def test_format_table():
    a = evaluate_category(*category(5))
    c = evaluate_category(*category(6)[:2])
    text = format_table({"bottle": a, "screw": c})
    lines = text.splitlines()
    assert lines[0].split() == [
        "category",
        "I-AUROC",
        "P-AUROC",
        "AU-PRO",
        "I-F1max",
        "P-F1max",
        "I-AP",
        "P-AP",
    ]
    row = {ln.split()[0]: ln.split()[1:] for ln in lines if ln and not ln.startswith("-")}
    assert row["bottle"][0] == f"{100 * a['image_auroc']:.2f}"
    assert row["screw"][1] == "-" and row["mean"][1] == "-"
    assert len({len(ln) for ln in lines}) == 1  # fixed width


def test_write_results_roundtrip_and_atomic(tmp_path):
    a = evaluate_category(*category(7))
    json_path, csv_path = write_results({"bottle": a}, tmp_path / "out", stem="run1")
    loaded = json.loads(json_path.read_text())
    assert loaded["bottle"] == a and loaded["mean"] == a
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["category", *KEYS]
    assert [r[0] for r in rows[1:]] == ["bottle", "mean"]
    assert float(rows[1][1]) == a["image_auroc"]  # repr round-trips floats exactly
    assert sorted(p.name for p in json_path.parent.iterdir()) == ["run1.csv", "run1.json"]
    # Overwrite in place.
    write_results({"bottle": a}, tmp_path / "out", stem="run1")
    assert sorted(p.name for p in json_path.parent.iterdir()) == ["run1.csv", "run1.json"]


def test_write_results_bad_paths(tmp_path):
    a = evaluate_category(*category(8)[:2])
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(MetricError, match="not a directory"):
        write_results({"c": a}, target)
    with pytest.raises(MetricError, match="plain file name"):
        write_results({"c": a}, tmp_path, stem="a/b")
