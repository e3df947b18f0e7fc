"""Pixel-metric benchmark: jad's exact pixel AUROC/AP/F1 and AU-PRO vs scikit-learn, same run.

Usage::

    python -m jad.benchmark metrics                      # 1725 images of 224x224 = 86.6 M pixels
    python -m jad.benchmark metrics --images 200 --size 256 --sklearn_pixels 20000000

Data: deterministic synthetic test set (about 73 % defective images, 1-3 rotated elliptic defects
each, smooth background + pixel noise + a blurred bump on the defects; float32 maps, uint8 masks).
Each step reports wall time and its peak RSS above the RSS before the step (``ru_maxrss`` after
resetting the high-water mark through ``/proc/self/clear_refs``), relative to the size of the
float32 map array. No timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import gc
import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage

from jad import metrics
from jad.benchmarks import report

MiB = 1 << 20


def make_data(
    n: int, size: int, seed: int = 0, defect_fraction: float = 0.73
) -> tuple[np.ndarray, np.ndarray]:
    """``masks`` uint8 [n, size, size] in {0, 1} and ``maps`` float32 [n, size, size]."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), np.uint8)
    maps = np.empty((n, size, size), np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for i in range(n):
        amap = ndimage.gaussian_filter(rng.standard_normal((size, size), np.float32), 6) * 6.0
        amap += rng.standard_normal((size, size), np.float32) * 0.25
        if rng.random() < defect_fraction:
            for _ in range(int(rng.integers(1, 4))):
                cy, cx = rng.uniform(0, size, 2)
                ry, rx = rng.uniform(1.5, size / 8, 2)
                c, s = np.cos(t := rng.uniform(0, np.pi)), np.sin(t)
                dy, dx = yy - cy, xx - cx
                inside = ((dy * c + dx * s) / ry) ** 2 + ((dx * c - dy * s) / rx) ** 2 <= 1.0
                masks[i][inside] = 1
            bump = ndimage.gaussian_filter(masks[i].astype(np.float32), 3)
            amap += bump * np.float32(rng.uniform(0.5, 2.5))
        maps[i] = amap
    return masks, maps


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / MiB


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _measure(fn: Callable[[], Any]) -> tuple[Any, float, float, bool]:
    """``(result, seconds, peak RSS above the RSS before, MiB, peak_was_reset)``."""
    gc.collect()
    reset = _reset_peak()
    before = _rss_mib()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out, dt, peak - before, reset


def _case(pixels: int) -> str:
    return f"pixel AUROC (jad: +AP+F1-max, one pass), {pixels / 1e6:.1f} M px"


def _accumulate(masks: np.ndarray, maps: np.ndarray, batch: int) -> dict[str, float]:
    acc = metrics.PixelAccumulator(maps.shape[1], maps.shape[2], capacity=len(maps))
    for s in range(0, len(maps), batch):
        acc.add(masks[s : s + batch], maps[s : s + batch])
    return acc.compute()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m jad.benchmark metrics", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--images", type=int, default=1725, help="number of test images (MVTec AD: 1725)"
    )
    p.add_argument("--size", type=int, default=224, help="map/mask side length")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--sklearn_pixels",
        type=int,
        default=0,
        help="pixels given to sklearn.roc_auc_score (first N of the flat arrays); 0 = all",
    )
    p.add_argument("--skip_sklearn", action="store_true", help="do not run scikit-learn at all")
    p.add_argument("--batch", type=int, default=32, help="batch size fed to PixelAccumulator")
    args = p.parse_args(argv)
    if args.images <= 0 or args.size <= 0:
        p.error("--images and --size must be positive")

    t0 = time.perf_counter()
    masks, maps = make_data(args.images, args.size, args.seed)
    n_px = maps.size
    map_mib = maps.nbytes / MiB
    print(
        f"data: {args.images} images x {args.size}^2 = {n_px / 1e6:.1f} M pixels, "
        f"defect pixels {masks.mean() * 100:.2f} %, float32 maps {map_mib:.0f} MiB, "
        f"uint8 masks {masks.nbytes / MiB:.0f} MiB, generated in {time.perf_counter() - t0:.1f} s"
    )

    def step(name: str, fn: Callable[[], Any]) -> tuple[Any, float]:
        out, dt, extra, reset = _measure(fn)
        note = "" if reset else " (peak not resettable: lifetime max)"
        print(
            f"{name:<46s} {dt:8.2f} s   peak RSS +{extra:7.0f} MiB = {extra / map_mib:5.2f}x maps{note}"
        )
        return out, dt

    rank, rank_t = step(
        "jad ranking_metrics (AUROC+AP+F1, one pass)", lambda: metrics.ranking_metrics(masks, maps)
    )
    pro, _ = step("jad aupro (exact, 8-conn, L=0.3)", lambda: metrics.aupro(masks, maps))
    acc, _ = step(
        f"jad PixelAccumulator (batch {args.batch}), all 4",
        lambda: _accumulate(masks, maps, args.batch),
    )
    print(
        f"  values: pixel AUROC {rank['auroc']:.6f}  AP {rank['ap']:.6f}  F1-max {rank['f1_max']:.6f}"
        f"  AU-PRO {pro:.6f}"
    )
    assert acc["pixel_auroc"] == rank["auroc"] and abs(acc["aupro"] - pro) < 1e-12, (acc, rank, pro)

    if args.skip_sklearn:
        report.record(
            "metrics",
            _case(n_px),
            rank_t,
            notes="peer scikit-learn skipped (--skip_sklearn)",
        )
        return 0
    try:
        from sklearn.metrics import roc_auc_score
    except ImportError:
        print("scikit-learn not installed: no peer")
        report.record_missing("metrics", _case(n_px), rank_t, "scikit-learn")
        return 0
    k = n_px if args.sklearn_pixels <= 0 else min(args.sklearn_pixels, n_px)
    y, s = masks.reshape(-1)[:k], maps.reshape(-1)[:k]
    label = "all" if k == n_px else f"first {k / 1e6:.1f} M"
    sk, sk_t = step(f"sklearn roc_auc_score ({label} pixels)", lambda: roc_auc_score(y, s))
    if k != n_px:
        rank, rank_t = step(
            f"jad ranking_metrics ({label} pixels)", lambda: metrics.ranking_metrics(y, s)
        )
    print(
        f"  |jad - sklearn| AUROC = {abs(rank['auroc'] - sk):.2e};  "
        f"time sklearn AUROC / jad AUROC+AP+F1 = {sk_t / rank_t:.2f}x"
    )
    report.record(
        "metrics",
        _case(k),
        rank_t,
        "sklearn roc_auc_score",
        sk_t,
        notes=f"|dAUROC| {abs(rank['auroc'] - sk):.1e}",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
