"""``python -m jad.benchmark data``: tfds prepare/read time and loader throughput vs a PIL loop.

Measures, in one process, on the synthetic set (generated into a temp folder unless ``--root``):

1. generating the synthetic set, preparing its tfds copy (all categories), one full read of the
   prepared records (encoded bytes, no decoding);
2. images/s of the jad loader (224x224 batches, masks included) for each backend/worker count,
   from the tfds copy and from the files directly;
3. images/s of a plain single-threaded PIL + numpy loop doing the same transform (the peer).

Every number is the best of ``--repeats`` interleaved rounds of ``--epochs`` passes each (loaders
are built outside the timer; their setup cost is printed once); the ratio is loader / PIL loop.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _pil_loop(records, resize: int, crop: int) -> int:
    """The peer: what one writes without a pipeline (same transform, one thread)."""
    mean = np.asarray((0.485, 0.456, 0.406), np.float32)
    std = np.asarray((0.229, 0.224, 0.225), np.float32)
    n = 0
    for r in records:
        img = Image.open(r.path).convert("RGB")
        w, h = img.size
        nw, nh = (int(resize * w / h), resize) if h <= w else (resize, int(resize * h / w))
        a = np.asarray(img.resize((nw, nh), Image.BILINEAR))
        top, left = int(round((nh - crop) / 2)), int(round((nw - crop) / 2))
        x = (a[top : top + crop, left : left + crop].astype(np.float32) / 255.0 - mean) / std
        if r.mask_path:
            m = np.asarray(Image.open(r.mask_path)) != 0
            rows = np.minimum((np.arange(nh) * (h / nh)).astype(int), h - 1)[top : top + crop]
            cols = np.minimum((np.arange(nw) * (w / nw)).astype(int), w - 1)[left : left + crop]
            _ = m[np.ix_(rows, cols)].astype(np.float32)
        n += x.shape[0] > 0
    return n


def main(argv: Sequence[str] | None = None) -> int:
    from jad import data
    from jad.benchmarks import report
    from jad.data import synthetic

    p = argparse.ArgumentParser(
        prog="python -m jad.benchmark data", description=__doc__.split("\n")[0]
    )
    p.add_argument("--root", default=None, help="synthetic set to use (default: generate one)")
    p.add_argument("--image-size", type=int, default=256, help="synthetic image side (px)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", default="0,1,2,4", help="comma-separated decode thread counts")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3, help="passes over the set per measurement")
    args = p.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",") if w]
    pre = data.Preprocess(256, 224)

    with tempfile.TemporaryDirectory(prefix="jad_bench_data_") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        root = (
            Path(args.root)
            if args.root
            else synthetic.ensure(tmp / "synthetic", image_size=args.image_size)
        )
        t_gen = time.perf_counter() - t
        cats = data.list_categories("synthetic", root)
        records = [r for c in cats for s in data.scan("synthetic", root, c).values() for r in s]
        n = len(records)
        size = Image.open(records[0].path).size
        print(
            f"data benchmark: synthetic {'+'.join(cats)} at {root}, {n} images of {size[0]}x{size[1]} "
            f"-> {pre.crop}x{pre.crop}, batch {args.batch_size}, {args.epochs} epochs per "
            f"measurement, best of {args.repeats}, "
            f"{os.cpu_count()} CPUs"
        )
        print(f"  generate synthetic set        {t_gen:8.2f} s" + (" (given)" if args.root else ""))

        t = time.perf_counter()
        prepared = [data.prepare("synthetic", root, c, data_dir=tmp / "tfds") for c in cats]
        print(f"  tfds prepare ({len(cats)} categories)   {time.perf_counter() - t:8.2f} s")

        def read_raw():
            for pr in prepared:
                for split in ("train", "test"):
                    src = pr.data_source(split)
                    for i in range(len(src)):
                        _ = src[i]["image"]

        t_read = _best(read_raw, args.repeats)
        print(f"  tfds full read (raw bytes)    {t_read:8.3f} s  ({n / t_read:8.1f} records/s)")

        n_ep = n * args.epochs

        def loaders(**kw):
            return [
                data.load(
                    "synthetic",
                    root,
                    c,
                    split,
                    pre=pre,
                    batch_size=args.batch_size,
                    data_dir=tmp / "tfds",
                    **kw,
                )
                for c in cats
                for split in ("train", "test")
            ]

        def run(los):
            for e in range(args.epochs):
                for lo in los:
                    for _ in lo.epoch(e):
                        pass

        def pil():
            for _ in range(args.epochs):
                _pil_loop(records, pre.resize, pre.crop)

        import grain  # noqa: F401  (imported once here, not inside the first timed pass)

        t = time.perf_counter()
        for _ in range(10):
            loaders(use_tfds=True)
        setup_ms = (time.perf_counter() - t) / 10 / (2 * len(cats)) * 1e3
        print(f"  load() setup, prepared copy   {setup_ms:8.2f} ms per split (scan + fingerprint)")

        variants = {"plain PIL loop (1 thread)    ": pil}
        for use_tfds in (True, False):
            for backend in ("grain", "threads"):
                for w in workers:
                    los = loaders(use_tfds=use_tfds, backend=backend, num_workers=w)
                    key = f"jad {'tfds ' if use_tfds else 'files'} {backend:7s} w={w:<2d}   "
                    variants[key] = functools.partial(run, los)
        # Interleaved rounds (every variant once per round, best per variant): on a shared machine
        # this spreads other processes' load over all variants instead of a few.
        best = dict.fromkeys(variants, float("inf"))
        for _ in range(args.repeats):
            for key, fn in variants.items():
                best[key] = min(best[key], _best(fn, 1))
        pil_key = "plain PIL loop (1 thread)    "
        pil_rate = n_ep / best[pil_key]
        for key, dt in best.items():
            rate = n_ep / dt
            print(f"  {key}{dt:8.3f} s  ({rate:8.1f} img/s)  = {rate / pil_rate:4.2f}x")
            if key != pil_key:
                report.record(
                    "data",
                    f"{' '.join(key.split())}, batch {args.batch_size}, {args.epochs} x {n} images "
                    f"{size[0]}px -> {pre.crop}px",
                    dt,
                    "PIL loop (1 thread)",
                    best[pil_key],
                    notes=f"{rate:.0f} img/s vs {pil_rate:.0f} img/s; best of {args.repeats}",
                )
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
