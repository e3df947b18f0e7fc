"""AU-PRO: spec cases T4-T7, parity with a per-threshold re-implementation of data_and_metrics.md
section 2.5, edge cases; the SimpleNet-style PRO against a direct per-threshold dilation loop."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import auc as sk_auc

from jad.metrics import MetricError, aupro, pro_simplenet_style
from jad.metrics import ranking as ranking_mod

TOL = 1e-9  # vs the float64 reference below (same maths, different summation order)


# ----------------------------------------------------------------------------- references
def ref_aupro(masks, maps, limit=0.3, connectivity=8):
    """Spec section 2.5 written as an explicit loop over every distinct score (float64)."""
    masks = np.asarray(masks) != 0
    maps = np.asarray(maps, np.float64)
    st = np.ones((3, 3)) if connectivity == 8 else ndimage.generate_binary_structure(2, 1)
    glab = np.zeros(masks.shape, np.int64)
    n_reg = 0
    for i, m in enumerate(masks):
        lab, n = ndimage.label(m, st)
        glab[i] = np.where(lab > 0, lab + n_reg, 0)
        n_reg += n
    sizes = np.bincount(glab.ravel(), minlength=n_reg + 1)[1:]
    ok = ~masks
    fpr, pro = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        pred = maps >= t
        fpr.append(min((pred & ok).sum() / ok.sum(), 1.0))
        hit = np.bincount(glab[pred], minlength=n_reg + 1)[1:]
        pro.append(min(float(np.mean(hit / sizes)), 1.0))
    fpr.append(1.0)
    pro.append(1.0)
    area = 0.0
    for a, b, pa, pb in zip(fpr[:-1], fpr[1:], pro[:-1], pro[1:], strict=True):
        if a >= limit:
            break
        if b <= limit:
            area += (b - a) * (pa + pb) / 2
        else:
            p_at = pa + (pb - pa) * (limit - a) / (b - a)
            area += (limit - a) * (pa + p_at) / 2
    return area / limit


def ref_simplenet(masks, maps, num_th=200, max_fpr=0.3):
    """pbas.md section 9 as a direct loop: threshold, dilate 5x5, per-region overlap, auc."""
    masks = np.asarray(masks) != 0
    lo, hi = maps.min(), maps.max()
    fprs, pros = [], []
    for t in np.arange(lo, hi, (hi - lo) / num_th):
        pred = maps > t
        overlaps = []
        for m, p in zip(masks, pred, strict=True):
            dil = ndimage.binary_dilation(p, structure=np.ones((5, 5), bool))
            lab, n = ndimage.label(m, np.ones((3, 3)))
            overlaps += [dil[lab == r].sum() / (lab == r).sum() for r in range(1, n + 1)]
        fprs.append((pred & ~masks).sum() / (~masks).sum())
        pros.append(np.mean(overlaps))
    fprs, pros = np.array(fprs), np.array(pros)
    keep = fprs < max_fpr
    f = fprs[keep]
    f = (f - f.min()) / (f.max() - f.min() + 1e-10)
    return sk_auc(f, pros[keep])


def blob_data(seed, n=6, h=32, w=32, decimals=2, dtype=np.float64):
    """Images with random rectangular/diagonal defects (some images good) and noisy maps."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, h, w), np.uint8)
    for i in range(n):
        if i % 3 == 2:
            continue  # a good image
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, h - 6), rng.integers(0, w - 6)
            masks[i, y : y + rng.integers(1, 6), x : x + rng.integers(1, 6)] = 255
        d = rng.integers(0, h - 4)
        masks[i, np.arange(d, d + 4), np.arange(d, d + 4)] = 1  # diagonal: 8- vs 4-conn differ
    maps = rng.normal(size=masks.shape) + 1.5 * (masks != 0) * rng.random(masks.shape)
    if decimals is not None:
        maps = np.round(maps, decimals)
    return masks, maps.astype(dtype)


def t4_data():
    mask_a = np.array([[1, 1, 0], [0, 0, 1]])
    score_a = np.array([[0.9, 0.45, 0.3], [0.1, 0.4, 0.8]])
    score_b = np.array([[0.7, 0.05, 0.15], [0.25, 0.35, 0.5]])
    return np.stack([mask_a, np.zeros_like(mask_a)]), np.stack([score_a, score_b])


# ----------------------------------------------------------------------------- spec cases
def test_t4_two_images_hand_computed():
    masks, maps = t4_data()
    assert aupro(masks, maps) == pytest.approx(61 / 81, abs=1e-12)
    assert aupro(masks, maps, connectivity=4) == pytest.approx(22 / 27, abs=1e-12)
    assert aupro(masks[:1], maps[:1]) == pytest.approx(1.0, abs=1e-12)  # image B dropped
    for m, s, c in ((masks, maps, 8), (masks, maps, 4), (masks[:1], maps[:1], 8)):
        assert aupro(m, s, connectivity=c) == pytest.approx(
            ref_aupro(m, s, connectivity=c), abs=TOL
        )


def test_t5_tie_at_the_limit_is_merged():
    assert aupro(np.array([[[1, 0, 0, 0]]]), np.array([[[0.5, 0.5, 0.2, 0.1]]])) == pytest.approx(
        0.45, abs=1e-12
    )


def test_t6_constant_map_and_perfect_map():
    masks, _ = blob_data(0)
    const = np.full(masks.shape, 0.7, np.float32)
    assert aupro(masks, const) == pytest.approx(0.15, abs=1e-12)
    assert aupro(masks, const, limit=1.0) == pytest.approx(0.5, abs=1e-12)
    perfect = (masks != 0).astype(np.float32) + 0.01 * np.random.default_rng(1).random(masks.shape)
    assert aupro(masks, perfect) == 1.0


@pytest.mark.parametrize(
    "seed,limit,connectivity", [(1, 0.3, 8), (2, 0.3, 4), (3, 0.05, 8), (4, 1.0, 8)]
)
def test_parity_with_reference_implementation(seed, limit, connectivity):
    masks, maps = blob_data(seed)
    got = aupro(masks, maps, limit, connectivity=connectivity)
    assert got == pytest.approx(ref_aupro(masks, maps, limit, connectivity), abs=TOL)


def test_parity_float32_without_ties_and_tiny_blocks(monkeypatch):
    masks, maps = blob_data(5, decimals=None, dtype=np.float32)
    expected = ref_aupro(masks, maps)
    assert aupro(masks, maps) == pytest.approx(expected, abs=TOL)
    monkeypatch.setattr(ranking_mod, "BLOCK", 5)  # runs crossing block borders
    masks, maps = blob_data(6, decimals=1)
    assert aupro(masks, maps) == pytest.approx(ref_aupro(masks, maps), abs=TOL)


def test_t7_invariances_and_determinism():
    masks, maps = blob_data(7)
    base = aupro(masks, maps)
    assert aupro(masks, np.exp(maps)) == pytest.approx(base, abs=1e-12)
    assert aupro(masks, 5 * maps + 3) == pytest.approx(base, abs=1e-12)
    perm = np.random.default_rng(0).permutation(len(masks))
    assert aupro(masks[perm], maps[perm]) == pytest.approx(base, abs=1e-12)
    assert aupro(masks, maps) == base
    # Mask values only matter through != 0.
    assert aupro((masks != 0).astype(np.float32) * 0.25, maps) == base


def test_random_maps_tend_to_the_diagonal():
    masks, _ = blob_data(8, n=30, h=48, w=48)
    maps = np.random.default_rng(8).random(masks.shape).astype(np.float32)
    assert abs(aupro(masks, maps) - 0.15) < 0.03  # loose: sampling noise of ~5k defect pixels


def test_errors_are_clear():
    masks, maps = blob_data(9)
    with pytest.raises(MetricError, match="no defect region"):
        aupro(np.zeros_like(masks), maps)
    with pytest.raises(MetricError, match="FPR of AU-PRO is undefined"):
        aupro(np.ones_like(masks), maps)
    with pytest.raises(MetricError, match="limit"):
        aupro(masks, maps, limit=0.0)
    with pytest.raises(MetricError, match="connectivity"):
        aupro(masks, maps, connectivity=6)
    with pytest.raises(MetricError, match="same shape"):
        aupro(masks, maps[:, :-1])
    bad = maps.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(MetricError, match="NaN"):
        aupro(masks, bad)


def test_single_image_2d_input():
    masks, maps = t4_data()
    assert aupro(masks[0], maps[0]) == aupro(masks[:1], maps[:1])


# ----------------------------------------------------------------------------- SimpleNet-style
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_simplenet_style_matches_direct_loop(dtype):
    masks, maps = blob_data(10, n=4, h=24, w=24, decimals=None, dtype=dtype)
    got = pro_simplenet_style(masks, maps)
    assert got == pytest.approx(ref_simplenet(masks, maps), abs=1e-9)
    assert got > aupro(masks, maps)  # dilation + FPR stretch inflate it on this data


def test_simplenet_style_errors():
    masks, maps = blob_data(11, n=3, h=16, w=16)
    with pytest.raises(MetricError, match="constant"):
        pro_simplenet_style(masks, np.zeros_like(maps))
    with pytest.raises(MetricError, match="no defect"):
        pro_simplenet_style(np.zeros_like(masks), maps)
