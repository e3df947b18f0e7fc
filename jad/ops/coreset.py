"""Greedy k-center coreset (farthest-point sampling) as in the official PatchCore sampler.

``method="approximate"`` reproduces ``ApproximateGreedyCoresetSampler`` (PatchCore spec §4):

1. Random projection to ``projection_dim`` (128) with a matrix drawn U(-1/sqrt(D), 1/sqrt(D))
   in torch ``Linear`` layout [projection_dim, D]; skipped when D == projection_dim.
2. delta_i = mean over ``num_starts`` distinct random rows s of ||z_i - z_s|| (Euclidean).
3. M times: k = argmax delta (first index on ties), record k, delta = min(delta, ||z - z_k||).

Distances use ``sqrt(max((-2 z.z_k + ||z||^2) + ||z_k||^2, 0))`` in float32 with HIGHEST
matmul precision, the operation order of the official code. The loop is a ``lax.fori_loop``
carrying delta [N] and the index buffer [M]; the projected bank is stored transposed [P, N] so
that each step is one streaming vector-matrix product over it (memory-bandwidth bound) plus
O(N) elementwise work. Extra memory beyond the input: the projected bank (N.P floats) + O(N).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jad.ops.distances import HIGHEST

METHODS = ("approximate", "exact", "random")
_PROJ_BLOCK = 1024  # rows per projection matmul: fixed, so rounding never depends on N
_INIT_BLOCK = 2048  # block edge of the exact method's blocked row-norm initialisation


# --------------------------------------------------------------------------------------------
# Building blocks (all operate on the local, transposed bank zt [P, N]).
# --------------------------------------------------------------------------------------------


def project_transposed(
    features: jax.Array, projection: jax.Array | None, block: int = _PROJ_BLOCK
) -> jax.Array:
    """Projected bank, transposed: ``(features @ projection.T).T``.

    Args:
      features: [N, D] floating.
      projection: [P, D] (torch ``Linear.weight`` layout) or None (no projection: P = D).
      block: rows projected per step; temporaries are O(block.(D + P)).

    Returns:
      [P, N] float32.
    """
    x = features
    n = x.shape[0]
    if projection is None:
        return x.astype(jnp.float32).T
    w = projection.astype(jnp.float32)
    # Every block has exactly `block` rows (the last one shifted back, or zero-padded when
    # n < block): XLA's matmul rounding depends on the block's row count but not on a row's
    # position in it, so a row's projection is bit-identical whatever N or the shard width is.
    nb = block
    if n < nb:
        x = jnp.pad(x, ((0, nb - n), (0, 0)))
    nblocks = -(-n // nb)

    def proj(blk):
        return lax.dot_general(
            w,
            blk.astype(jnp.float32),
            (((1,), (1,)), ((), ())),
            precision=HIGHEST,
            preferred_element_type=jnp.float32,
        )  # [P, nb]

    if n <= nb:
        return proj(x)[:, :n]

    def body(j, zt):
        start = jnp.minimum(j * nb, n - nb)  # last block shifted back, overlap rewritten
        blk = lax.dynamic_slice_in_dim(x, start, nb, axis=0)
        return lax.dynamic_update_slice_in_dim(zt, proj(blk), start, axis=1)

    zt = jnp.zeros((w.shape[0], n), jnp.float32)
    return lax.fori_loop(0, nblocks, body, zt)


def _col_sq_norms(zt: jax.Array) -> jax.Array:
    """Squared norm of every column of zt [P, N] -> [N] float32.

    A sequential sum over the P rows: unlike ``jnp.sum(zt * zt, 0)``, whose XLA reduction
    order depends on N, every column gets the same rounding whatever the (shard) width.
    """
    return lax.fori_loop(
        0, zt.shape[0], lambda p, acc: acc + zt[p] * zt[p], jnp.zeros(zt.shape[1:], jnp.float32)
    )


def _dist_to(zt: jax.Array, zn: jax.Array, zk: jax.Array) -> jax.Array:
    """Euclidean distance of every column of zt to the vector zk, official op order.

    zt [P, N], zn [N] squared column norms, zk [P] -> [N] float32.
    """
    s = lax.dot_general(
        zk, zt, (((0,), (0,)), ((), ())), precision=HIGHEST, preferred_element_type=jnp.float32
    )
    d2 = (-2.0 * s + zn) + jnp.sum(zk * zk)
    return jnp.sqrt(jnp.maximum(d2, 0.0))


def _first_argmax(v: jax.Array, iota: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(max, first index of the max) of a 1-D array; two vectorised passes, no variadic reduce."""
    m = jnp.max(v)
    i = jnp.min(jnp.where(v == m, iota, v.shape[0]))
    return m, jnp.minimum(i, v.shape[0] - 1)


def _mean_start_distance(zt: jax.Array, zn: jax.Array, zs: jax.Array) -> jax.Array:
    """delta init of the approximate sampler: mean Euclidean distance to the start rows.

    One vector-matrix product per start (not an [S, P] x [P, N] matmul, whose rounding depends
    on the matrix shape) so that a sharded run gives bit-identical values.

    Args:
      zt: [P, N] transposed bank; zn: [N] its squared column norms; zs: [S, P] start vectors.

    Returns:
      [N] float32.
    """
    total = lax.fori_loop(
        0,
        zs.shape[0],
        lambda s, acc: acc + _dist_to(zt, zn, zs[s]),
        jnp.zeros(zt.shape[1:], jnp.float32),
    )
    return total / zs.shape[0]


def _row_norm_init(zt_all: jax.Array, zt_local: jax.Array, block: int = _INIT_BLOCK) -> jax.Array:
    """delta init of the official exact sampler: L2 norm of each distance-matrix row.

    ``delta_i = sqrt(sum_j ||z_i - z_j||^2)`` over all N columns of ``zt_all`` [P, N], for the
    local columns ``zt_local`` [P, Nl]; blocked so that only [block, block] tiles exist.
    Returns [Nl] float32.
    """
    n = zt_all.shape[1]
    nl = zt_local.shape[1]
    zn_all = _col_sq_norms(zt_all)
    zn_loc = _col_sq_norms(zt_local)
    cb = min(block, n)
    ncb = -(-n // cb)
    iota = jnp.arange(cb, dtype=jnp.int32)

    def col_body(j, acc):
        start = jnp.minimum(j * cb, n - cb)
        zb = lax.dynamic_slice_in_dim(zt_all, start, cb, axis=1)  # [P, cb]
        nb_ = lax.dynamic_slice_in_dim(zn_all, start, cb)
        s = lax.dot_general(
            zt_local,
            zb,
            (((0,), (0,)), ((), ())),
            precision=HIGHEST,
            preferred_element_type=jnp.float32,
        )  # [Nl, cb]
        d = jnp.sqrt(jnp.maximum((-2.0 * s + zn_loc[:, None]) + nb_[None, :], 0.0))
        d = jnp.where((start + iota >= j * cb)[None, :], d, 0.0)
        return acc + jnp.sum(d * d, axis=1)

    # Rows are processed all at once per column block: the tile is [Nl, cb]; bound Nl too.
    if nl > block:
        rb = block
        nrb = -(-nl // rb)

        def row_body(i, out):
            rs = jnp.minimum(i * rb, nl - rb)
            sub = lax.dynamic_slice_in_dim(zt_local, rs, rb, axis=1)
            val = _row_norm_init(zt_all, sub, block)
            return lax.dynamic_update_slice_in_dim(out, val, rs, axis=0)

        return lax.fori_loop(0, nrb, row_body, jnp.zeros((nl,), jnp.float32))
    acc = lax.fori_loop(0, ncb, col_body, jnp.zeros((nl,), jnp.float32))
    return jnp.sqrt(acc)


def _greedy_loop(
    zt: jax.Array, delta: jax.Array, num: int, select, progress=None, report_here=True
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """M steps of farthest-point selection on the local bank.

    Args:
      zt: [P, Nl] local transposed bank.
      delta: [Nl] initial coverage distance (-inf for padding columns).
      num: M.
      select: function (local_max, local_index) -> (global_max, global_index, z_k [P]) that
        resolves the step's pick across shards (identity on one device).
      progress: optional host callback ``progress(steps_done)``, called about 100 times.
      report_here: traced bool; only one shard reports.

    Returns:
      (indices [M] int32 global, radii [M] float32, final delta [Nl]).
    """
    zn = _col_sq_norms(zt)
    iota = jnp.arange(zt.shape[1], dtype=jnp.int32)

    def step(i, carry):
        delta, idx, radii = carry
        m, k = _first_argmax(delta, iota)
        gm, gk, zk = select(m, k)
        idx = idx.at[i].set(gk)
        radii = radii.at[i].set(gm)
        delta = jnp.minimum(delta, _dist_to(zt, zn, zk))
        if progress is not None:
            every = max(1, num // 100)
            lax.cond(
                jnp.logical_and(report_here, (i + 1) % every == 0),
                lambda: jax.debug.callback(progress, i + 1),
                lambda: None,
            )
        return delta, idx, radii

    init = (delta, jnp.zeros((num,), jnp.int32), jnp.zeros((num,), jnp.float32))
    delta, idx, radii = lax.fori_loop(0, num, step, init)
    return idx, radii, delta


# --------------------------------------------------------------------------------------------
# Single-device and sharded drivers.
# --------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("num", "exact_init", "progress"))
def _coreset_single(features, projection, starts, *, num, exact_init, progress=None):
    zt = project_transposed(features, projection)
    zn = _col_sq_norms(zt)
    if exact_init:
        delta = _row_norm_init(zt, zt)
    else:
        delta = _mean_start_distance(zt, zn, jnp.take(zt, starts, axis=1).T)

    def select(m, k):
        return m, k, lax.dynamic_index_in_dim(zt, k, axis=1, keepdims=False)

    idx, radii, _ = _greedy_loop(zt, delta, num, select, progress)
    return idx, radii


@functools.partial(
    jax.jit, static_argnames=("num", "exact_init", "mesh", "axis_name", "progress", "num_rows")
)
def _coreset_sharded(
    features, projection, starts, *, num, exact_init, mesh, axis_name, progress=None, num_rows
):
    n = num_rows  # rows beyond it (already padded by the caller) are zeros, like the pad here
    shards = mesh.shape[axis_name]
    n_pad = -(-features.shape[0] // shards) * shards
    if n_pad != features.shape[0]:
        features = jnp.pad(features, ((0, n_pad - features.shape[0]), (0, 0)))
    nl = n_pad // shards
    spec = jax.sharding.NamedSharding(mesh, P(axis_name))
    features = lax.with_sharding_constraint(features, spec)

    def per_shard(x, w, st):
        shard = lax.axis_index(axis_name).astype(jnp.int32)
        offset = shard * nl
        zt = project_transposed(x, w)  # [P, nl]
        zn = _col_sq_norms(zt)
        gidx = offset + jnp.arange(nl, dtype=jnp.int32)
        valid = gidx < n
        if exact_init:
            zt_all = lax.all_gather(zt, axis_name, axis=1, tiled=True)[:, :n]  # [P, N]
            delta = _row_norm_init(zt_all, zt)
        else:
            # Rows of the start points: each shard contributes the ones it owns.
            own = (st >= offset) & (st < offset + nl)
            loc = jnp.clip(st - offset, 0, nl - 1)
            zs = jnp.where(own[:, None], jnp.take(zt, loc, axis=1).T, 0.0)
            zs = lax.psum(zs, axis_name)  # exact: one owner, zeros elsewhere
            delta = _mean_start_distance(zt, zn, zs)
        delta = jnp.where(valid, delta, -jnp.inf)  # padding is never the farthest point

        def select(m, k):
            row = lax.dynamic_index_in_dim(zt, k, axis=1, keepdims=False)
            # One all-gather per pick, not three (each is a round trip between hosts in a
            # multi-host run): [max, global index (bit-cast, exact), row] of every shard. The
            # index's bits travel as a float32 (denormal for small indices): exact because an
            # all-gather only moves bytes (no arithmetic, so no flush-to-zero); the sharded tests
            # check the picks bit for bit.
            gk = lax.bitcast_convert_type(k + offset, jnp.float32)
            packed = lax.all_gather(jnp.concatenate([jnp.stack([m, gk]), row]), axis_name)
            ms = packed[:, 0]  # [S]
            ks = lax.bitcast_convert_type(packed[:, 1], jnp.int32)
            rows = packed[:, 2:]  # [S, P]
            gm = jnp.max(ms)
            # Lowest global index among shards that hold the maximum (shard order = index order).
            win = jnp.min(jnp.where(ms == gm, jnp.arange(shards, dtype=jnp.int32), shards))
            win = jnp.minimum(win, shards - 1)
            return gm, ks[win], rows[win]

        idx, radii, _ = _greedy_loop(zt, delta, num, select, progress, shard == 0)
        return idx, radii

    if projection is None:
        return jax.shard_map(
            lambda x, st: per_shard(x, None, st),
            mesh=mesh,
            in_specs=(P(axis_name), P()),
            out_specs=(P(), P()),
            check_vma=False,  # outputs are computed from all-gathered values: replicated
        )(features, starts)
    return jax.shard_map(
        per_shard,
        mesh=mesh,
        in_specs=(P(axis_name), P(), P()),
        out_specs=(P(), P()),
        check_vma=False,  # outputs are computed from all-gathered values: replicated
    )(features, projection, starts)


# --------------------------------------------------------------------------------------------
# Public API.
# --------------------------------------------------------------------------------------------


def coreset_size(n: int, *, num: int | None = None, ratio: float | None = None) -> int:
    """Number of picks: ``num``, or ``int(n * ratio)`` (floor, as the official sampler)."""
    if (num is None) == (ratio is None):
        raise ValueError("Pass exactly one of num= (number of rows) or ratio= (fraction of rows).")
    if num is not None:
        if not isinstance(num, (int, np.integer)) or isinstance(num, bool) or not 1 <= num <= n:
            raise ValueError(f"num must be an integer in [1, {n}] for {n} rows, got {num!r}.")
        return int(num)
    if not 0.0 < float(ratio) <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio!r}.")
    m = int(n * float(ratio))
    if m < 1:
        raise ValueError(
            f"ratio={ratio} of {n} rows selects no row (int({n} * {ratio}) = 0); "
            "use a larger ratio or num=1."
        )
    return m


def _random_projection(key: jax.Array, dim: int, d: int) -> jax.Array:
    bound = 1.0 / np.sqrt(d)
    return jax.random.uniform(key, (dim, d), jnp.float32, -bound, bound)


@functools.partial(jax.jit, static_argnums=(2,))
def _distinct_rows(key: jax.Array, n: jax.Array, s: int) -> jax.Array:
    """``s`` distinct row indices in [0, n) [s] int32, a uniformly random subset (Floyd's
    algorithm: slot i draws t in [0, j], j = n - s + i, and takes j if t is already taken).

    O(s) memory: ``jax.random.choice(..., replace=False)`` permutes all n rows instead (a sort of
    n keys: measured +82 MiB peak and 39-59 MiB kept resident at n = 1 M, more than a 1 % bank).
    """

    def body(i, chosen):
        j = n - s + i
        t = jax.random.randint(jax.random.fold_in(key, i), (), 0, j + 1, dtype=jnp.int32)
        return chosen.at[i].set(jnp.where(jnp.any(chosen == t), j, t))

    return lax.fori_loop(0, s, body, jnp.full((s,), -1, jnp.int32))


def _projection_and_starts(
    n: int,
    d: int,
    *,
    key: jax.Array | None,
    projection: jax.Array | None,
    projection_dim: int,
    num_starts: int,
    start_indices: np.ndarray | None,
    approximate: bool = True,
) -> tuple[jax.Array | None, jax.Array]:
    """The projection matrix [P, D] float32 (None: no projection) and the start rows [S] int32
    of the approximate sampler, drawn from ``key`` (split in two: projection, starts). One place
    for the in-memory and the streaming sampler, which pick alike only if they draw alike.
    ``approximate=False`` (the exact sampler): no random projection, no start rows."""
    if projection is not None:
        projection = jnp.asarray(projection, jnp.float32)
        if projection.ndim != 2 or projection.shape[1] != d:
            raise ValueError(
                f"projection must have shape [P, {d}] (torch Linear.weight layout), "
                f"got {tuple(projection.shape)}."
            )
    need_proj = projection is None and approximate and d != projection_dim
    need_starts = start_indices is None and approximate
    if (need_proj or need_starts) and key is None:
        raise ValueError(
            "method='approximate' needs key= (a jax.random key) unless both projection= "
            "(or D == projection_dim) and start_indices= are given."
        )
    if key is not None:
        k_proj, k_start = jax.random.split(key)
    if need_proj:
        if not isinstance(projection_dim, (int, np.integer)) or projection_dim < 1:
            raise ValueError(f"projection_dim must be a positive integer, got {projection_dim!r}.")
        projection = _random_projection(k_proj, int(projection_dim), d)
    if not approximate:
        return projection, jnp.zeros((1,), jnp.int32)  # unused by the exact init
    if start_indices is None:
        if not isinstance(num_starts, (int, np.integer)) or num_starts < 1:
            raise ValueError(f"num_starts must be a positive integer, got {num_starts!r}.")
        s = min(int(num_starts), n)
        return projection, _distinct_rows(k_start, jnp.int32(n), s)
    st = np.asarray(start_indices)
    if st.ndim != 1 or st.size == 0 or not np.issubdtype(st.dtype, np.integer):
        raise ValueError(
            f"start_indices must be a non-empty 1-D integer array, got {st.dtype} {st.shape}."
        )
    if st.min() < 0 or st.max() >= n:
        raise ValueError(f"start_indices must lie in [0, {n}), got {st.min()}..{st.max()}.")
    return projection, jnp.asarray(st, jnp.int32)


def greedy_coreset(
    features: jax.Array,
    *,
    num: int | None = None,
    ratio: float | None = None,
    key: jax.Array | None = None,
    method: str = "approximate",
    projection_dim: int = 128,
    num_starts: int = 10,
    projection: jax.Array | None = None,
    start_indices: jax.Array | None = None,
    return_radii: bool = False,
    mesh: Mesh | None = None,
    axis_name: str = "data",
    progress: Callable[[int], None] | None = None,
    num_rows: int | None = None,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Greedy k-center coreset indices in pick order.

    Args:
      features: [N, D] floating (float32 recommended), rows = candidate patches; may be
        sharded by rows.
      num: number of rows to pick (1 <= num <= N); or
      ratio: fraction, M = int(N * ratio) (floor, as the official sampler).
      key: ``jax.random`` key for the projection matrix and the start rows (split in two), or
        for the subset of ``method="random"``. Not needed when ``projection`` (or D ==
        projection_dim) and ``start_indices`` are both given.
      method: ``"approximate"`` (official PatchCore sampler, the default); ``"exact"``: no
        projection (unless ``projection`` is given), delta initialised with the L2 norm of each
        row of the full distance matrix like the official ``GreedyCoresetSampler`` (computed in
        [2048, 2048] tiles, never N x N; note the official exact sampler also projects to 128
        first: pass ``projection=`` to reproduce it); ``"random"``: a uniform random subset
        without replacement (baseline).
      projection_dim: P of the approximate method; no projection when D == P (official rule).
      num_starts: number of distinct random start rows seeding delta (min(num_starts, N)).
      projection: [P, D] matrix to use instead of a random one (e.g. the official torch
        ``Linear.weight``); applied even when D == P.
      start_indices: [S] distinct int start rows to use instead of random ones.
      return_radii: also return the coverage radius of each pick (delta at the time it was
        picked; official ``coreset_select_distance``).
      mesh, axis_name: split the rows over ``mesh.shape[axis_name]`` devices; every step takes
        a local (max, first index) per shard and a global max via all-gather (ties: lowest
        global index). N need not divide the device count; padding rows are never picked.
        Indices are identical to the single-device run.
      progress: optional host function called with the number of picks done, about every 1 %
        of the loop (through ``jax.debug.callback``; one executable per distinct function).
      num_rows: only the first ``num_rows`` rows are data, the rest padding that is never picked
        (a multi-process global array padded to the device count); default all rows. Picks,
        sizes and start rows are those of the unpadded ``features[:num_rows]``.

    Returns:
      indices [M] int32 into ``features`` in pick order (duplicates possible when rows are
      identical, as in the official code); with ``return_radii`` also radii [M] float32
      (zeros for ``method="random"``).

    Raises:
      ValueError: bad shapes, method, num/ratio, missing key, out-of-range start indices.
    """
    features = jnp.asarray(features) if not isinstance(features, jax.Array) else features
    if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
        raise ValueError(
            f"features must be a non-empty 2-D array [N, D], got shape {tuple(features.shape)}."
        )
    if not jnp.issubdtype(features.dtype, jnp.floating):
        raise ValueError(f"features must be floating, got dtype {features.dtype}; cast it first.")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if mesh is not None and axis_name not in mesh.shape:
        raise ValueError(
            f"axis_name {axis_name!r} is not an axis of the mesh {dict(mesh.shape)}; "
            "pass the name of the axis that splits the rows."
        )
    n, d = features.shape
    if num_rows is not None:
        if not 0 < int(num_rows) <= n:
            raise ValueError(f"num_rows={num_rows} must be in [1, {n}] (the rows of features).")
        if int(num_rows) < n and mesh is None:
            raise ValueError("num_rows < len(features) (padding) is for sharded runs (mesh=).")
        n = int(num_rows)
    m = coreset_size(n, num=num, ratio=ratio)

    if method == "random":
        if key is None:
            raise ValueError("method='random' needs key= (a jax.random key).")
        idx = jax.random.choice(key, n, (m,), replace=False).astype(jnp.int32)
        return (idx, jnp.zeros((m,), jnp.float32)) if return_radii else idx

    exact_init = method == "exact"
    projection, starts = _projection_and_starts(
        n,
        d,
        key=key,
        projection=projection,
        projection_dim=projection_dim,
        num_starts=num_starts,
        start_indices=start_indices,
        approximate=method == "approximate",
    )

    if mesh is None:
        idx, radii = _coreset_single(
            features, projection, starts, num=m, exact_init=exact_init, progress=progress
        )
    else:
        idx, radii = _coreset_sharded(
            features,
            projection,
            starts,
            num=m,
            exact_init=exact_init,
            mesh=mesh,
            axis_name=axis_name,
            progress=progress,
            num_rows=n,
        )
    return (idx, radii) if return_radii else idx


# --------------------------------------------------------------------------------------------
# Streaming driver: rows on disk, memory O(N + block).
# --------------------------------------------------------------------------------------------

_STREAM_BLOCK = 16384  # columns of the projected bank per streamed block ([P, block] floats)


@jax.jit
def _stream_project(x, w):
    """[_PROJ_BLOCK, D] rows -> [P, _PROJ_BLOCK]: the same dot as ``project_transposed``."""
    return project_transposed(x, w)


def _better(zt, delta, base, best):
    """The running (max, global index, column) over blocks visited in order, including this one
    (columns ``base..`` of ``zt`` / ``delta``): a later block replaces the best only if strictly
    larger, so the first block holding the max wins (the lowest global index, as the in-memory
    kernel's argmax)."""
    m, i = _first_argmax(delta, jnp.arange(zt.shape[1], dtype=jnp.int32))
    col = lax.dynamic_index_in_dim(zt, i, axis=1, keepdims=False)
    bm, bi, bc = best
    take = m > bm
    return jnp.where(take, m, bm), jnp.where(take, base + i, bi), jnp.where(take, col, bc)


@jax.jit
def _stream_init(zt, zs, valid, base, best):
    """Squared norms, initial delta of one block, and the running best including this block."""
    zn = _col_sq_norms(zt)
    delta = jnp.where(valid, _mean_start_distance(zt, zn, zs), -jnp.inf)
    return zn, delta, _better(zt, delta, base, best)


@functools.partial(jax.jit, donate_argnums=(2,))
def _stream_step(zt, zn, delta, zk, base, best):
    """One pick's update of one block, in place: delta = min(delta, ||z - z_k||); then the
    running best including this block."""
    delta = jnp.minimum(delta, _dist_to(zt, zn, zk))
    return delta, _better(zt, delta, base, best)


def greedy_coreset_stream(
    rows,
    *,
    num: int | None = None,
    ratio: float | None = None,
    key: jax.Array | None = None,
    projection_dim: int = 128,
    num_starts: int = 10,
    projection: jax.Array | None = None,
    start_indices: np.ndarray | None = None,
    tmp_dir: str | None = None,
    block: int = _STREAM_BLOCK,
    return_radii: bool = False,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """``greedy_coreset(method="approximate")`` over rows that live on disk, same indices.

    ``rows`` is a :class:`jad.utils.rowfile.RowFile` [N, D] (or an in-memory [N, D] array). One
    pass projects the rows (the same fixed ``_PROJ_BLOCK``-row dots as the in-memory kernel) into
    a temporary projected store in ``tmp_dir`` laid out as column blocks [P, block]; every pick
    then streams that store once (N.P floats read from the page cache, not kept resident) and
    updates delta block by block. Resident memory: delta and squared norms (8 bytes per row) plus
    two blocks, whatever N. Picks, ties and radii equal the in-memory kernel's bit for bit (the
    per-column arithmetic is the same and does not depend on the block width; tested).

    Returns numpy ``indices [M] int32`` (with ``return_radii`` also ``radii [M] float32``).
    """
    import os
    import tempfile

    from jad.utils.memory import trim_heap
    from jad.utils.rowfile import RowFile

    if isinstance(rows, RowFile):
        n, d = rows.shape[0], int(np.prod(rows.row_shape))
        read = lambda a, b, out=None: rows.read(a, b, out)  # noqa: E731
    else:
        arr = np.asarray(rows)
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"rows must be a floating [N, D] array, got {arr.dtype} {arr.shape}")
        n, d = arr.shape
        read = lambda a, b, out=None: arr[a:b]  # noqa: E731
    if n == 0 or d == 0:
        raise ValueError(f"rows must be a non-empty [N, D] array, got [{n}, {d}].")
    m = coreset_size(n, num=num, ratio=ratio)
    projection, starts = _projection_and_starts(
        n,
        d,
        key=key,
        projection=projection,
        projection_dim=projection_dim,
        num_starts=num_starts,
        start_indices=start_indices,
    )
    p = d if projection is None else int(projection.shape[0])
    starts = np.asarray(starts, np.int64)

    block = int(min(block, n))
    nblk = -(-n // block)
    pb = _PROJ_BLOCK
    chunk_starts = [0] if n <= pb else [min(j * pb, n - pb) for j in range(-(-n // pb))]
    xbuf = _aligned_empty((pb, d))
    zbuf = np.zeros((p, block), np.float32)
    fd, tmp = tempfile.mkstemp(prefix=".coreset-", suffix=".f32", dir=tmp_dir)
    store = None
    try:
        # ---- projection pass: column block b of the projected store holds rows b*block.. ----
        zs = np.zeros((len(starts), p), np.float32)
        for b in range(nblk):
            c0, c1 = b * block, min((b + 1) * block, n)
            zbuf[:] = 0.0
            for s0 in chunk_starts:
                if s0 + pb <= c0 or s0 >= c1:
                    continue
                got = read(s0, min(s0 + pb, n), xbuf)
                x = np.asarray(got, np.float32)
                if len(x) < pb:  # n < _PROJ_BLOCK: zero-padded, as the in-memory kernel
                    x = np.concatenate([x, np.zeros((pb - len(x), d), np.float32)])
                elif np.shares_memory(x, xbuf):  # (a view of it: .base is the raw buffer)
                    x = jax.device_put(xbuf)  # aliased, no copy; read back below before reuse
                z = np.asarray(_stream_project(x, projection) if projection is not None else x.T)
                lo, hi = max(s0, c0), min(s0 + pb, c1, n)
                zbuf[:, lo - c0 : hi - c0] = z[:, lo - s0 : hi - s0]
            own = (starts >= c0) & (starts < c1)
            zs[own] = zbuf[:, starts[own] - c0].T
            os.pwrite(fd, memoryview(zbuf).cast("B"), b * p * block * 4)
        store = RowFile(tmp, (nblk, p, block), np.float32)
        xbuf = zbuf = x = z = None  # the projection pass's buffers: not resident in the picks
        trim_heap()  # ... nor what XLA's threads freed in their malloc arenas (measured)

        # ---- init pass and picks: every pass reads the store once, block by block ----
        zn, delta = [None] * nblk, [None] * nblk
        zs_j = jnp.asarray(zs)
        bases = [jnp.int32(b * block) for b in range(nblk)]

        # Two 64-byte-aligned buffers in turn, handed to XLA without a copy (jax.device_put
        # aliases aligned host memory on CPU; jnp.asarray would copy asynchronously into a fresh
        # allocation per block, which both races with the refill and bloats the heap: measured).
        # A buffer is refilled only once the computation reading it is done, so reading block
        # b+1 overlaps the computation on block b and at most two blocks are ever resident.
        ring = [_aligned_empty((p, block)) for _ in range(2)]
        busy: list = [None, None]
        turn = [0]

        def load(b):
            j = turn[0] = (turn[0] + 1) % 2
            if busy[j] is not None:
                jax.block_until_ready(busy[j])
            store.read(b, b + 1, ring[j].reshape(1, p, block))
            return j, jax.device_put(ring[j])

        # The best (max, global index, column) is carried from block to block on the device, so
        # a pick costs one host sync (its index and radius), not one per block.
        none = (jnp.float32(-jnp.inf), jnp.int32(0), jnp.zeros((p,), jnp.float32))
        best = none
        for b in range(nblk):
            j, zt_b = load(b)
            valid = jnp.arange(block) < (n - b * block)
            zn[b], delta[b], best = _stream_init(zt_b, zs_j, valid, bases[b], best)
            busy[j] = best[0]
        idx = np.zeros((m,), np.int32)
        radii = np.zeros((m,), np.float32)
        every = max(1, m // 100)
        for i in range(m):
            rad, k, zk = best
            radii[i], idx[i] = jax.device_get((rad, k))
            if i + 1 == m:
                break
            best = none
            for b in range(nblk):
                j, zt_b = load(b)
                delta[b], best = _stream_step(zt_b, zn[b], delta[b], zk, bases[b], best)
                busy[j] = best[0]  # ready when the step is (delta is donated next pick)
            if (i + 1) % every == 0:
                trim_heap()  # dispatch leaves a few bytes per block in the arenas (measured)
                if progress is not None:
                    progress(i + 1)
        zn = delta = best = zk = None
        busy[:] = [None, None]
        trim_heap()  # the bank is read next: hand back what the picks freed
    finally:
        if store is not None:
            store.close()
        os.close(fd)
        os.unlink(tmp)
    if progress is not None:
        progress(m)
    return (idx, radii) if return_radii else idx


def _aligned_empty(shape, align: int = 64) -> np.ndarray:
    """An uninitialised float32 array whose data starts on an ``align``-byte boundary."""
    nbytes = int(np.prod(shape)) * 4
    raw = np.empty(nbytes + align, np.uint8)
    off = (-raw.ctypes.data) % align
    return raw[off : off + nbytes].view(np.float32).reshape(shape)
