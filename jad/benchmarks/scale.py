"""``python -m jad.benchmark scale``: a PatchCore bank fitted from features that live on disk.

Writes N synthetic patch features [N, D] float32 to a ``.npy`` store (default 1 M x 1024 = 4 GiB,
written block by block, never held in memory), then runs the real on-disk fit
(:func:`jad.methods.patchcore.build_bank_stream`: streaming coreset, then the picked rows read
from the store) and reports

- peak resident memory of the fit above the process's resident memory before it, against the
  bank's size (goal: <= 1.5 x bank; the features themselves are never resident);
- time per coreset pick against the memory-bandwidth floor: every pick must read the projected
  store once (N x P float32) plus delta and the squared norms; the floor is those bytes over
  this machine's measured read bandwidth (a max-reduction over a 1 GiB array, best of 3).

The peer is the in-memory fit's requirement (features + projected bank resident), printed as
memory, not run: at the default size it would not be bounded by the bank.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from jad.benchmarks.kernels import PeakRSS, _rss_bytes

GiB = 2**30


def write_store(path: Path, n: int, d: int, seed: int, block: int = 16384) -> float:
    """N x D standard-normal float32 rows (plus a cluster offset per 4096 rows) into ``path``."""
    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
        "fortran_order": False,
        "shape": (n, d),
    }
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        np.lib.format.write_array_header_2_0(f, header)
        for s in range(0, n, block):
            rows = rng.standard_normal((min(block, n - s), d), dtype=np.float32)
            rows += rng.standard_normal((1, d), dtype=np.float32) * 3.0  # clustered, like patches
            f.write(rows.tobytes())
    return time.perf_counter() - t0


def read_bandwidth(nbytes: int = GiB) -> float:
    """Bytes/s of a streaming read: the best of a jitted max-reduction (XLA, vectorised) and
    NumPy's over a 1 GiB float32 array, best of 3 each."""
    import jax
    import jax.numpy as jnp

    a = np.ones(nbytes // 4, np.float32)
    x = jnp.asarray(a)
    f = jax.jit(jnp.max)
    f(x).block_until_ready()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        f(x).block_until_ready()
        best = min(best, time.perf_counter() - t0)
        t0 = time.perf_counter()
        np.maximum.reduce(a)
        best = min(best, time.perf_counter() - t0)
    del a, x
    return nbytes / best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m jad.benchmark scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument(
        "--ratio",
        type=float,
        default=0.01,
        help="coreset ratio (default 1 %%: 10 k picks, minutes; 10 %% takes hours here)",
    )
    p.add_argument("--projection-dim", type=int, default=128)
    p.add_argument("--dir", default=None, help="where the store goes (default: a temp folder)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import jax

    from jad.methods.patchcore import build_bank_stream
    from jad.utils.rowfile import RowFile

    n, d, pdim = args.rows, args.dim, args.projection_dim
    folder = Path(args.dir or tempfile.mkdtemp(prefix="jad-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "features.npy"
    print(f"scale: {n:,} x {d} float32 features = {n * d * 4 / GiB:.2f} GiB on disk at {path}")
    t_write = write_store(path, n, d, args.seed)
    print(f"  store written in {t_write:.1f} s")
    bw = read_bandwidth()
    m = int(n * args.ratio)
    bank_bytes = m * d * 4
    floor_bytes = n * (pdim * 4 + 12)  # projected store + zn + delta read + delta write
    floor_s = floor_bytes / bw

    rows = RowFile.open_npy(path)
    picks: list[tuple[int, float]] = []
    # Compile first (the same block shapes on a small store): XLA's compiler memory is a one-off
    # of the process, not of the bank; it is reported separately.
    before_compile = _rss_bytes()
    warm = folder / "warm.npy"
    write_store(warm, min(n, 2 * 16384 + 1), d, args.seed + 1)
    build_bank_stream(
        RowFile.open_npy(warm),
        key=jax.random.key(0),
        ratio=2 / min(n, 32769),
        projection_dim=pdim,
        tmp_dir=folder,
        progress=False,
    )
    warm.unlink()
    compile_bytes = _rss_bytes() - before_compile

    class Clock:
        def set(self, k):
            picks.append((int(k), time.perf_counter()))

    base = _rss_bytes()
    t0 = time.perf_counter()
    try:
        with PeakRSS() as peak:
            state = build_bank_stream(
                rows,
                key=jax.random.key(args.seed),
                ratio=args.ratio,
                projection_dim=pdim,
                tmp_dir=folder,
                progress=Clock().set,
            )
    finally:
        path.unlink(missing_ok=True)
    total = time.perf_counter() - t0
    assert state["bank"].shape == (m, d)
    (k0, t_first), (k1, t_last) = picks[0], picks[-1]
    per_pick = (t_last - t_first) / max(k1 - k0, 1)
    extra = peak.peak - base
    print(
        f"  bank {m:,} x {d} = {bank_bytes / GiB:.3f} GiB; fit {total:.1f} s "
        f"(projection pass + {m:,} picks)"
    )
    print(
        f"  peak RSS above the start: {extra / GiB:.3f} GiB = {extra / bank_bytes:.2f} x bank "
        f"(goal <= 1.5); process peak {peak.peak / GiB:.2f} GiB, start {base / GiB:.2f} GiB"
    )
    print(f"  one-off XLA compilation before the fit: {compile_bytes / GiB:.3f} GiB of RSS")
    print(
        f"  time per pick {per_pick * 1e3:.1f} ms; floor {floor_s * 1e3:.1f} ms "
        f"({floor_bytes / 2**20:.0f} MiB per pick at {bw / 1e9:.1f} GB/s read) -> "
        f"{per_pick / floor_s:.2f} x the floor"
    )
    print(
        f"  in-memory fit would hold the features ({n * d * 4 / GiB:.2f} GiB) + projected bank "
        f"({n * pdim * 4 / GiB:.2f} GiB) resident"
    )
    from jad.benchmarks import report

    report.record(
        "scale",
        f"on-disk coreset pick, {n:,} x {d}",
        per_pick,
        "memory-bandwidth floor",
        floor_s,
        unit="s/pick",
        notes=f"{m:,} picks; peak RSS {extra / bank_bytes:.2f} x bank (goal <= 1.5)",
    )
    return 0
