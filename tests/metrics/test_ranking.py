"""AUROC / AP / F1-max: scikit-learn parity, the spec's oracle cases T1-T3/T6/T7, edge cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from jad import metrics
from jad.metrics import MetricError, auroc, average_precision, f1_max, ranking_metrics
from jad.metrics import ranking as ranking_mod

EXACT = 1e-9  # tolerance vs scikit-learn (both float64; differences are summation order only)


def sk_f1_max(y, s) -> float:
    p, r, _ = precision_recall_curve(y, s)
    den = p + r
    f1 = np.divide(2 * p * r, den, out=np.zeros_like(den), where=den > 0)
    return float(f1.max())


def random_case(seed: int, n: int = 200_000, prevalence: float = 0.1, decimals: int | None = 2):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < prevalence
    s = rng.normal(size=n) + 0.8 * y
    if decimals is not None:
        s = np.round(s, decimals)  # forces massive ties
    return y, s


@pytest.mark.parametrize("seed,prevalence,decimals", [(0, 0.1, 2), (1, 0.5, 2), (2, 0.02, None)])
def test_sklearn_parity_random(seed, prevalence, decimals):
    y, s = random_case(seed, prevalence=prevalence, decimals=decimals)
    r = ranking_metrics(y, s)
    assert abs(r["auroc"] - roc_auc_score(y, s)) <= EXACT
    assert abs(r["ap"] - average_precision_score(y, s)) <= EXACT
    assert abs(r["f1_max"] - sk_f1_max(y, s)) <= EXACT
    assert r["n_pos"] == int(y.sum()) and r["n_neg"] == int((~y).sum())


def test_sklearn_parity_float32_pixels_any_shape():
    rng = np.random.default_rng(3)
    masks = rng.random((8, 64, 64)) < 0.05
    maps = (rng.random((8, 64, 64)) + 0.5 * masks).astype(np.float32)
    maps = np.round(maps * 64).astype(np.float32) / 64  # float32 ties
    r = ranking_metrics(masks, maps)
    y, s = masks.ravel(), maps.ravel()
    assert abs(r["auroc"] - roc_auc_score(y, s)) <= EXACT
    assert abs(r["ap"] - average_precision_score(y, s)) <= EXACT
    assert abs(r["f1_max"] - sk_f1_max(y, s)) <= EXACT


def test_tiny_blocks_give_identical_results(monkeypatch):
    """Tie runs spanning block borders are counted once (blocks of 7 vs one block)."""
    y, s = random_case(4, n=5_000, prevalence=0.3, decimals=1)
    expected = ranking_metrics(y, s)
    monkeypatch.setattr(ranking_mod, "BLOCK", 7)
    got = ranking_metrics(y.astype(np.float32), s)
    assert got["auroc"] == expected["auroc"]  # integer Mann-Whitney: bit-exact
    assert got["f1_max"] == expected["f1_max"] and got["f1_threshold"] == expected["f1_threshold"]
    assert got["ap"] == pytest.approx(expected["ap"], abs=1e-12)  # float sum, blockwise order


def test_t1_image_toy():
    y, s = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    r = ranking_metrics(y, s)
    assert r["auroc"] == pytest.approx(3 / 4, abs=1e-12)
    assert r["ap"] == pytest.approx(5 / 6, abs=1e-12)
    assert r["f1_max"] == pytest.approx(0.8, abs=1e-12)
    assert r["f1_threshold"] == 0.35


def test_t2_ties_every_permutation():
    y = np.array([1, 0, 0, 1])
    s = np.array([0.5, 0.5, 0.5, 0.9])
    values = set()
    for perm in itertools.permutations(range(4)):
        p = list(perm)
        r = ranking_metrics(y[p], s[p])
        values.add((r["auroc"], r["ap"], r["f1_max"]))
    assert len(values) == 1  # identical, not just close, for every input order
    (auc, ap, f1) = values.pop()
    assert auc == 0.75  # a per-sample ROC stepper in the given order would give 0.5
    assert ap == pytest.approx(average_precision_score(y, s), abs=EXACT)
    assert f1 == pytest.approx(sk_f1_max(y, s), abs=EXACT)


def test_t3_anomalib_docstring_cases():
    y = [0, 1, 1, 1, 0, 0, 0, 0, 1, 1]
    s = [0.59, 0.35, 0.72, 0.33, 0.73, 0.81, 0.30, 0.05, 0.04, 0.48]
    r = ranking_metrics(y, s)
    assert r["auroc"] == pytest.approx(0.36, abs=1e-12)
    assert r["ap"] == pytest.approx(0.460952, abs=1e-6)
    assert r["f1_max"] == pytest.approx(2 / 3, abs=1e-12)  # reached at t = 0.04 and t = 0.33
    assert auroc([0, 0, 1, 1, 0], [0.13, 0.26, 0.08, 0.92, 0.03]) == pytest.approx(2 / 3, abs=1e-12)


def test_t6_constant_scores_and_perfect_separation():
    rng = np.random.default_rng(5)
    y = rng.random(1000) < 0.2
    const = np.full(1000, 0.3, np.float32)
    assert auroc(y, const) == 0.5
    assert average_precision(y, const) == pytest.approx(y.mean(), abs=1e-12)
    perfect = y.astype(np.float64) + rng.random(1000) * 0.5
    r = ranking_metrics(y, perfect)
    assert (r["auroc"], r["ap"], r["f1_max"]) == (1.0, 1.0, 1.0)


def test_t7_strictly_increasing_transform_and_permutation_invariance():
    y, s = random_case(6, n=20_000, decimals=2)
    base = ranking_metrics(y, s)
    for f in (lambda x: 3 * x - 7, np.exp, lambda x: np.arctan(x) ** 3):
        r = ranking_metrics(y, f(s))
        for k in ("auroc", "ap", "f1_max"):
            assert r[k] == pytest.approx(base[k], abs=1e-12)
    perm = np.random.default_rng(7).permutation(y.size)
    r = ranking_metrics(y[perm], s[perm])
    assert all(r[k] == base[k] for k in ("auroc", "ap", "f1_max"))


def test_determinism_and_wrappers():
    y, s = random_case(8, n=10_000)
    a, b = ranking_metrics(y, s), ranking_metrics(y, s)
    assert a == b
    assert (auroc(y, s), average_precision(y, s), f1_max(y, s)) == (
        a["auroc"],
        a["ap"],
        a["f1_max"],
    )


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "int32", "uint8", "bool"])
def test_score_dtypes(dtype):
    rng = np.random.default_rng(9)
    y = rng.random(4000) < 0.3
    raw = rng.integers(0, 50, 4000) + 20 * y
    if dtype == "bfloat16":
        import ml_dtypes

        s = raw.astype(ml_dtypes.bfloat16)
    elif dtype == "bool":
        s = raw > 30
    else:
        s = raw.astype(dtype)
    ref = s.astype(np.float64)
    assert abs(auroc(y, s) - roc_auc_score(y, ref)) <= EXACT
    assert abs(average_precision(y, s) - average_precision_score(y, ref)) <= EXACT


def test_labels_nonzero_is_positive():
    s = np.array([0.1, 0.2, 0.3, 0.4])
    assert auroc(np.array([0.0, 0.0, 0.5, 1.0]), s) == auroc(np.array([0, 0, 1, 1]), s) == 1.0
    assert auroc(np.array([0, 0, 255, 255], np.uint8), s) == 1.0


@pytest.mark.parametrize(
    "labels,scores,match",
    [
        ([0, 0, 0], [0.1, 0.2, 0.3], "all 3 labels are negatives"),
        ([1, 1], [0.1, 0.2], "all 2 labels are positives"),
        ([], [], "empty"),
        ([0, 1], [0.1, np.nan], "NaN"),
        ([0, 1], [np.nan, 0.2], "NaN"),
        ([0, np.nan, 1], [0.1, 0.2, 0.3], "labels contain NaN"),
        ([0, 1, 1], [0.1, 0.2], "one label per score"),
    ],
)
def test_errors_are_clear(labels, scores, match):
    with pytest.raises(MetricError, match=match):
        ranking_metrics(np.asarray(labels), np.asarray(scores))
    assert issubclass(MetricError, ValueError)


def test_complex_scores_rejected():
    with pytest.raises(MetricError, match="real-valued"):
        auroc([0, 1], np.array([1j, 2j]))


def test_infinite_scores_are_ordered():
    y = [0, 0, 1, 1]
    s = np.array([-np.inf, 0.2, 0.3, np.inf])
    assert auroc(y, s) == 1.0
    assert metrics.f1_max(y, s) == 1.0


def test_jax_arrays_are_accepted():
    import jax.numpy as jnp

    y, s = random_case(10, n=5_000, decimals=None)
    expected = auroc(y, s.astype(np.float32))
    assert auroc(jnp.asarray(y), jnp.asarray(s, jnp.float32)) == expected
