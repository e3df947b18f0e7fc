"""Kernel benchmark: ``python -m jad.benchmark kernels [--size small|large]``.

Measures, in one process, jad's kernels against peers and prints time, peer time, ratio
(peer / jad, > 1 means jad is faster) and the peak RSS during each case:

- kNN k=1, bank 50,000 x 1024, 5,000 queries: faiss-cpu ``IndexFlatL2`` and blocked numpy.
- greedy coreset 10 % of 50,000 x 1024 (full run) and of 200,000 x 1024 (the first
  ``--steps-200k`` picks, default 2,000 of 20,000; per-step times extrapolate linearly):
  a torch CPU transcription of the official sampler (in the official [N, P] layout and in the
  faster transposed layout) and numpy.
- the memory-bandwidth floor of the coreset loop: bytes of the projected bank read per step x
  steps / stream bandwidth measured in the same run (best of a few large jnp reductions).

``--size large`` (about an hour on 2 cores; needs ~6 GiB free): coreset 10 % of
1,000,000 x 1024 float32 (bank generated blockwise in place on the device) and kNN of
100,000 queries against it; ``--max-steps``/``--max-queries`` bound it for a smoke run.
Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import resource
import threading
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jad.benchmarks import report
from jad.ops import greedy_coreset, knn

# --------------------------------------------------------------------------------------------
# Measurement helpers.
# --------------------------------------------------------------------------------------------

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:  # not Linux: fall back to the process-wide peak
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakRSS:
    """Context manager sampling the process RSS every 5 ms; ``.peak`` in bytes."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            self._stop.wait(0.005)

    def __enter__(self) -> PeakRSS:
        self.peak = _rss_bytes()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss_bytes())


def _timed(fn: Callable[[], object], repeats: int = 1) -> tuple[float, object]:
    """Min wall time over ``repeats`` calls (results blocked on); returns (seconds, last out)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return best, out


def _gb(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB"


def stream_bandwidth(nbytes: int = 256 * 2**20, repeats: int = 3) -> tuple[float, str]:
    """Best read bandwidth (bytes/s) of a few large jitted jnp reductions; (bw, which)."""
    x = jnp.ones((64, nbytes // 256), jnp.float32) * 1.5
    kernels = {
        "sum": jax.jit(lambda a: jnp.sum(a)),
        "max": jax.jit(lambda a: jnp.max(a)),
        "row-sum": jax.jit(lambda a: jnp.sum(a, axis=1)),
        "vec@mat": jax.jit(
            lambda a: lax.dot_general(
                a[:, 0], a, (((0,), (0,)), ((), ())), precision=lax.Precision.HIGHEST
            )
        ),
    }
    best, which = 0.0, ""
    for name, f in kernels.items():
        f(x).block_until_ready()
        t, _ = _timed(lambda f=f: f(x), repeats)
        if x.nbytes / t > best:
            best, which = x.nbytes / t, name
    x = None  # free before the next case
    return best, which


def _row(
    name: str,
    t_jad: float,
    peers: dict[str, float],
    rss: int,
    extra: str = "",
    *,
    missing: tuple[str, ...] = (),
    record_notes: str = "",
) -> None:
    """Prints one case and records one report row per peer (``missing``: peers not installed)."""
    parts = [f"{name:<44s} jad {t_jad:8.3f} s"]
    for pname, tp in peers.items():
        parts.append(f"{pname} {tp:8.3f} s (x{tp / t_jad:5.2f})")
    parts.append(f"peak RSS {_gb(rss)}")
    print(" | ".join(parts) + (f" | {extra}" if extra else ""), flush=True)
    notes = "; ".join(x for x in (extra, record_notes, f"jad peak RSS {_gb(rss)}") if x)
    for pname, tp in peers.items():
        report.record("kernels", name, t_jad, pname, tp, notes=notes)
    for package in missing:
        report.record_missing("kernels", name, t_jad, package, notes=notes)
    if not peers and not missing:
        report.record("kernels", name, t_jad, notes=notes)


# --------------------------------------------------------------------------------------------
# Peers.
# --------------------------------------------------------------------------------------------


def numpy_knn1(q: np.ndarray, bank: np.ndarray, block: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Blocked numpy brute force, k=1, same expansion form; (sq_dists [Q], indices [Q])."""
    qn = np.einsum("ij,ij->i", q, q)
    best = np.full(len(q), np.inf, np.float32)
    best_i = np.zeros(len(q), np.int64)
    rows = np.arange(len(q))
    for s in range(0, len(bank), block):
        b = bank[s : s + block]
        d = qn[:, None] - 2.0 * (q @ b.T) + np.einsum("ij,ij->i", b, b)[None, :]
        j = d.argmin(1)
        v = d[rows, j]
        better = v < best
        best[better] = v[better]
        best_i[better] = j[better] + s
    return np.maximum(best, 0), best_i


def torch_coreset(x, m: int, w, starts, transposed: bool):
    """Official approximate sampler transcribed to torch from the spec (not the repo code).

    ``transposed=False`` keeps the official [N, P] layout (one ``mv`` per step); True stores
    the projected bank as [P, N] (vector-matrix product per step, faster on CPU).

    Returns:
      (indices [m] int64, setup seconds (projection + init), loop seconds (m steps)).
    """
    import torch

    with torch.no_grad():
        t0 = time.perf_counter()
        xt = torch.from_numpy(x)
        z = xt @ torch.from_numpy(w).T  # [N, P]
        zz = (z * z).sum(1)
        zt = z.T.contiguous() if transposed else None

        def dist(zk):
            s = zk @ zt if transposed else torch.mv(z, zk)
            return ((-2.0 * s + zz) + zk.dot(zk)).clamp_(min=0).sqrt_()

        delta = torch.stack([dist(z[int(s)]) for s in starts], 1).mean(1)
        t1 = time.perf_counter()
        out = np.empty(m, np.int64)
        for i in range(m):
            k = int(torch.argmax(delta))
            out[i] = k
            torch.minimum(delta, dist(z[k]), out=delta)
        t2 = time.perf_counter()
    return out, t1 - t0, t2 - t1


def numpy_coreset(x, m: int, w, starts):
    """Same sampler in numpy float32 (transposed layout); returns like :func:`torch_coreset`."""
    t0 = time.perf_counter()
    zt = np.ascontiguousarray((x @ w.T).T)  # [P, N]
    zz = np.einsum("pn,pn->n", zt, zt)

    def dist(zk):
        return np.sqrt(np.maximum((-2.0 * (zk @ zt) + zz) + zk.dot(zk), 0))

    delta = np.mean([dist(zt[:, s]) for s in starts], axis=0).astype(np.float32)
    t1 = time.perf_counter()
    out = np.empty(m, np.int64)
    for i in range(m):
        k = int(np.argmax(delta))
        out[i] = k
        np.minimum(delta, dist(zt[:, k]), out=delta)
    return out, t1 - t0, time.perf_counter() - t1


def _same_prefix(a, b) -> int:
    a, b = np.asarray(a), np.asarray(b)
    n = min(len(a), len(b))
    diff = np.nonzero(a[:n] != b[:n])[0]
    return int(diff[0]) if diff.size else n


# --------------------------------------------------------------------------------------------
# Cases.
# --------------------------------------------------------------------------------------------


def bench_knn(n: int, q_rows: int, d: int, *, peers: bool = True, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    bank = rng.standard_normal((n, d), dtype=np.float32)
    q = rng.standard_normal((q_rows, d), dtype=np.float32)
    jb, jq = jnp.asarray(bank), jnp.asarray(q)
    gflop = 2.0 * n * q_rows * d / 1e9
    with PeakRSS() as rss:
        jax.block_until_ready(knn(jq, jb, 1))  # compile
        t_jad, (jd, ji) = _timed(lambda: knn(jq, jb, 1), repeats=2)
    peer_t: dict[str, float] = {}
    notes = [f"{gflop / t_jad:.0f} GFLOP/s"]
    missing: tuple[str, ...] = ()
    if peers:
        try:
            import faiss

            index = faiss.IndexFlatL2(d)
            index.add(bank)
            t_f, (fd, fi) = _timed(lambda: index.search(q, 1), repeats=2)
            peer_t["faiss"] = t_f
            notes.append(f"idx==faiss {np.mean(np.asarray(ji)[:, 0] == fi[:, 0]):.4f}")
            del index
        except ImportError:
            notes.append("faiss not installed")
            missing = ("faiss-cpu",)
        t_n, (nd, ni) = _timed(lambda: numpy_knn1(q, bank), repeats=1)
        peer_t["numpy"] = t_n
        notes.append(f"idx==numpy {np.mean(np.asarray(ji)[:, 0] == ni):.4f}")
    _row(
        f"knn k=1 bank {n}x{d} queries {q_rows}",
        t_jad,
        peer_t,
        rss.peak,
        ", ".join(notes),
        missing=missing,
    )


def bench_coreset(
    n: int, d: int, ratio: float, steps: int | None, bw: float, peer_steps: int, seed: int = 0
) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d), dtype=np.float32)
    w = rng.uniform(-1 / np.sqrt(d), 1 / np.sqrt(d), (128, d)).astype(np.float32)
    starts = rng.choice(n, 10, replace=False)
    m_full = int(n * ratio)
    m = m_full if steps is None else min(steps, m_full)
    label = f"coreset {ratio:.0%} of {n}x{d}" + ("" if m == m_full else f" ({m}/{m_full} steps)")
    jx, jw = jnp.asarray(x), jnp.asarray(w)

    def run_jad():
        return greedy_coreset(jx, num=m, projection=jw, start_indices=starts)

    with PeakRSS() as rss:
        jax.block_until_ready(run_jad())  # compile (and one full run)
        t_jad, idx = _timed(run_jad, repeats=2)
    # loop only (projection excluded) for the bandwidth floor
    z = jnp.asarray(x @ w.T)
    jax.block_until_ready(greedy_coreset(z, num=m, start_indices=starts))
    t_loop, _ = _timed(lambda: greedy_coreset(z, num=m, start_indices=starts), repeats=2)
    z = None  # free before the peers run
    floor = m * n * 128 * 4 / bw
    peer_t: dict[str, float] = {}
    notes = []
    missing: tuple[str, ...] = ()
    ps = min(m, peer_steps)  # peers run ps steps; full time = setup + loop * m / ps
    peers: list[tuple[str, Callable]] = []
    try:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        peers += [
            ("torch[N,P]", lambda: torch_coreset(x, ps, w, starts, False)),
            ("torch[P,N]", lambda: torch_coreset(x, ps, w, starts, True)),
        ]
    except ImportError:
        notes.append("torch not installed")
        missing = ("torch",)
    peers.append(("numpy", lambda: numpy_coreset(x, ps, w, starts)))
    for name, fn in peers:
        pidx, t_setup, t_steps = fn()
        peer_t[name] = t_setup + t_steps * m / ps
        notes.append(f"picks=={name.split('[')[0]} for {_same_prefix(idx, pidx)}/{ps}")
    if ps < m:
        notes.append(f"peer times extrapolated from {ps} steps")
    _row(
        label,
        t_jad,
        peer_t,
        rss.peak,
        "; ".join(dict.fromkeys(notes)),
        missing=missing,
        record_notes=f"loop {t_loop / m * 1e6:.0f} us/step, bandwidth floor/jad {floor / t_loop:.2f}",
    )
    print(
        f"{'':<44s} loop only {t_loop:.3f} s = {t_loop / m * 1e6:.0f} us/step; bandwidth floor "
        f"{floor:.3f} s ({m} steps x {n * 128 * 4 / 2**20:.1f} MiB / {bw / 1e9:.1f} GB/s); "
        f"floor/jad = {floor / t_loop:.2f}"
        + ("" if m == m_full else f"; full {m_full} steps ~ {t_loop / m * m_full:.0f} s"),
        flush=True,
    )


def _device_bank(n: int, d: int, key: jax.Array, block: int = 16384) -> jax.Array:
    """[n, d] float32 N(0, 1) bank written block by block into one buffer (no full temporaries)."""

    @jax.jit
    def fill(key):
        buf = jnp.zeros((n, d), jnp.float32)
        nb = -(-n // block)

        def body(i, buf):
            start = jnp.minimum(i * block, n - block)
            blk = jax.random.normal(jax.random.fold_in(key, i), (block, d), jnp.float32)
            return lax.dynamic_update_slice_in_dim(buf, blk, start, axis=0)

        return lax.fori_loop(0, nb, body, buf)

    return fill(key)


def bench_large(max_steps: int | None, max_queries: int | None, bw: float) -> None:
    n, d = 1_000_000, 1024
    base = _rss_bytes()
    with PeakRSS() as rss:
        bank = jax.block_until_ready(_device_bank(n, d, jax.random.key(0)))
        bank_bytes = bank.nbytes
        m_full = int(n * 0.1)
        m = m_full if max_steps is None else min(max_steps, m_full)
        t, _ = _timed(lambda: greedy_coreset(bank, num=m, key=jax.random.key(1)))
    print(
        f"coreset 10% of {n}x{d} ({m}/{m_full} steps, incl. compile): {t:.1f} s "
        f"({t / m * 1e3:.2f} ms/step); bank {_gb(bank_bytes)}; peak RSS {_gb(rss.peak)} "
        f"(start {_gb(base)}) = {(rss.peak - base) / bank_bytes:.2f} x bank above start; "
        f"floor {m * n * 512 / bw:.1f} s",
        flush=True,
    )
    report.record(
        "kernels",
        f"coreset 10% of {n}x{d} ({m}/{m_full} steps, incl. compile)",
        t,
        notes=f"no peer at this size; peak RSS {_gb(rss.peak)}, bank {_gb(bank_bytes)}",
    )
    q_rows = 100_000 if max_queries is None else min(max_queries, 100_000)
    q = jax.random.normal(jax.random.key(2), (q_rows, d), jnp.float32)
    with PeakRSS() as rss:
        t, _ = _timed(lambda: knn(q, bank, 1))
    print(
        f"knn k=1 {q_rows} queries vs {n}x{d} (incl. compile): {t:.1f} s "
        f"({2.0 * n * q_rows * d / t / 1e9:.0f} GFLOP/s); peak RSS {_gb(rss.peak)}",
        flush=True,
    )
    report.record(
        "kernels",
        f"knn k=1 {q_rows} queries vs {n}x{d} (incl. compile)",
        t,
        notes=f"no peer at this size; {2.0 * n * q_rows * d / t / 1e9:.0f} GFLOP/s",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jad.benchmark kernels", description=__doc__)
    parser.add_argument("--size", choices=("small", "large", "smoke"), default="small")
    parser.add_argument("--steps-200k", type=int, default=1000, help="coreset steps timed at 200k")
    parser.add_argument(
        "--peer-steps", type=int, default=500, help="coreset steps the peers run (extrapolated)"
    )
    parser.add_argument("--max-steps", type=int, default=None, help="large: bound coreset steps")
    parser.add_argument("--max-queries", type=int, default=None, help="large: bound kNN queries")
    args = parser.parse_args(argv)

    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform} x{len(jax.devices())}, "
        f"{os.cpu_count()} CPU threads; ratios are peer/jad (> 1: jad faster)",
        flush=True,
    )
    bw, which = stream_bandwidth(32 * 2**20 if args.size == "smoke" else 256 * 2**20)
    print(f"stream bandwidth (best jnp reduction, {which}): {bw / 1e9:.1f} GB/s", flush=True)
    if args.size == "smoke":  # seconds; used by the test-suite to keep this file working
        bench_knn(2000, 300, 64)
        bench_coreset(3000, 256, 0.1, None, bw, peer_steps=100)
        return 0
    if args.size == "small":
        bench_knn(50_000, 5_000, 1024)
        bench_coreset(50_000, 1024, 0.1, None, bw, peer_steps=args.peer_steps)
        bench_coreset(200_000, 1024, 0.1, args.steps_200k, bw, peer_steps=args.peer_steps)
        return 0
    bench_large(args.max_steps, args.max_queries, bw)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
