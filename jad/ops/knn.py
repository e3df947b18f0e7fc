"""Exact k-nearest-neighbour search (squared L2), streamed over bank and query blocks.

Candidates are found with ``max(||q||^2 - 2 q.b + ||b||^2, 0)`` in float32 (the faiss
``IndexFlatL2`` / PatchCore form: one matmul per block); the distances returned (and merged across
blocks and devices) are those candidates' ``||q - b||^2`` recomputed term by term, which does not
carry the matmul's cancellation error (eps * |q|^2, CPU-kernel dependent: XLA:CPU's AVX2 GEMM
put PatchCore's golden patch scores 5.5e-4 off faiss's, over the golden tolerance; recomputed,
1.6e-4 on AVX2, the golden's own distance from float64). Memory is O(Q.k + query_block.block) beyond the inputs: the [Q, N] distance
matrix is never built. Ties are broken towards the lowest bank index, also across blocks and
devices.

Bit-identical on any number of shards: XLA:CPU's matmul rounding depends on the shape of the
block (and, through the ISA-specific kernels it selects, differently on AVX2 and AVX-512), so
every bank row is always multiplied in a block of the same ``nbs`` rows at the same position:
``nbs`` is a function of the bank size only (:func:`auto_block_size`), blocks start at multiples
of ``nbs`` on one device, and on a mesh every shard holds whole blocks (the bank is padded to
``shards * sharded_rows(...)`` rows). Norms are computed per block, so their rounding does not
depend on the shard width either.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jad.ops.distances import HIGHEST, Precision

DEFAULT_BLOCK = 2048  # most bank rows per step; [query_block, block] f32 tile = 8 MiB
_MIN_BLOCK = 256
DEFAULT_QUERY_BLOCK = 1024
_BIG_INDEX = np.iinfo(np.int32).max


def _canon_dtype(compute_dtype):
    if compute_dtype is None:
        return None
    dt = jnp.dtype(compute_dtype)
    return None if dt == jnp.float32 else dt


def _check_2d(name: str, x) -> None:
    if x.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array [rows, features], got shape {tuple(x.shape)}; "
            "reshape it to [-1, D] first."
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); pass at least one row.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{name} must be a floating array, got dtype {x.dtype}; cast it first.")


def validate_knn_args(queries, bank, k: int) -> None:
    """Raises ``ValueError`` with one clear sentence for bad shapes, dtypes or ``k``."""
    _check_2d("queries", queries)
    _check_2d("bank", bank)
    if queries.shape[1] != bank.shape[1]:
        raise ValueError(
            f"queries have {queries.shape[1]} features but the bank has {bank.shape[1]}; "
            "both must use the same feature dimension."
        )
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    if k > bank.shape[0]:
        raise ValueError(
            f"k={k} is larger than the bank ({bank.shape[0]} rows); use k <= {bank.shape[0]}."
        )


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def auto_block_size(n: int, block_size: int | None = None) -> int:
    """Bank rows per block for a bank of ``n`` rows: a function of ``n`` only, never of the shard
    count, so a row meets the same matmul shape and position on 1 or 8 devices.

    XLA:CPU's matmul rounding depends on the block's row count (and on the ISA's kernels: on an
    AVX2-only CPU a 27-row block rounds differently from a 216-row one where AVX-512 happens to
    agree), but not on a row's position inside a block of a given size. Default: about n / 64
    rounded up to a multiple of 128, between 256 and 2048, so that padding every shard to whole
    blocks costs at most ~1/8 extra rows on 8 devices.
    """
    cap = _cdiv(n, 8) * 8  # a bank smaller than a block is padded to a multiple of 8 rows only
    if block_size is None:
        block_size = min(DEFAULT_BLOCK, max(_MIN_BLOCK, _cdiv(_cdiv(n, 64), 128) * 128))
    return int(min(block_size, cap))


def _direct(q: jax.Array, blk: jax.Array, cols: jax.Array) -> jax.Array:
    """``||q_r - blk[cols[r, j]]||^2`` summed term by term in float32: [qb, D], [nbs, D], [qb, c]
    int -> [qb, c]. The expansion form finds the candidates of a block (one matmul); their
    distances are then recomputed directly, so the values do not carry the matmul's cancellation
    error (eps * |q|^2, which depends on the CPU's GEMM kernel: 4x larger with XLA:CPU's AVX2
    kernels than with AVX-512 or OpenBLAS, measured on the golden bank)."""
    rows = jnp.take(blk.astype(jnp.float32), cols, axis=0)  # [qb, c, D]
    return jnp.sum(jnp.square(q[:, None, :] - rows), axis=-1)


def _block_topk(
    q: jax.Array,
    bank: jax.Array,
    k: int,
    n_valid: int,
    offset,
    nbs: int,
    precision,
) -> tuple[jax.Array, jax.Array]:
    """k smallest distances of one query block against all local bank rows.

    The local bank is cut into blocks of exactly ``nbs`` rows starting at local row 0; the rows
    past the last full block form one zero-padded tail block (a copy of < nbs rows, never of
    the bank). Norms are computed per block (a fixed [nbs, D] reduction).

    Args:
      q: [qb, D] queries (float32 or compute_dtype).
      bank: [Nl, D] local bank rows.
      k: neighbours to keep (<= number of real rows overall).
      n_valid: rows with a global index >= n_valid are padding and never returned.
      offset: global index of local row 0 (int32 scalar, may be traced).
      nbs: bank rows per block.

    Returns:
      ([qb, k] float32 ascending, [qb, k] int32 global indices; lowest index on ties).
    """
    qb = q.shape[0]
    nl = bank.shape[0]
    nfull, tail = divmod(nl, nbs)
    qf = q.astype(jnp.float32)
    qn = jnp.sum(qf * qf, axis=1)
    kk = min(k, nbs)
    local_iota = jnp.arange(nbs, dtype=jnp.int32)

    def step(carry, blk, start):
        best_d, best_i = carry
        bnb = jnp.sum(jnp.square(blk.astype(jnp.float32)), axis=1)
        gstart = offset + start
        bnb = jnp.where(gstart + local_iota < n_valid, bnb, jnp.inf)
        ip = lax.dot_general(
            q,
            blk,
            (((1,), (1,)), ((), ())),
            precision=precision,
            preferred_element_type=jnp.float32,
        )
        d = qn[:, None] + bnb[None, :] - 2.0 * ip
        if k == 1:
            # min, then the first column equal to it: two vectorised reductions, much faster
            # on CPU than a variadic argmin reduce.
            d = jnp.maximum(d, 0.0)
            m = jnp.min(d, axis=1)
            a = jnp.min(jnp.where(d == m[:, None], local_iota[None, :], nbs), axis=1)
            a = jnp.minimum(a, nbs - 1)  # NaN rows only; keeps the index in range
            m = jnp.where(jnp.isfinite(m), _direct(qf, blk, a[:, None])[:, 0], m)
            better = m < best_d[:, 0]  # strict: the earlier (lower-index) block wins ties
            new_d = jnp.where(better, m, best_d[:, 0])[:, None]
            new_i = jnp.where(better, a + gstart, best_i[:, 0])[:, None]
            return new_d, new_i
        # +0.0 for every clamped value: top_k orders -0.0 and +0.0 differently.
        d = jnp.where(d <= 0.0, 0.0, d)
        neg, a = lax.top_k(-d, kk)  # stable: lowest column first among equal values
        neg = jnp.where(jnp.isfinite(neg), -_direct(qf, blk, a), neg)
        cand_d = jnp.concatenate([best_d, -neg], axis=1)
        cand_i = jnp.concatenate([best_i, a + gstart], axis=1)
        cand_d, cand_i = lax.sort((cand_d, cand_i), dimension=1, num_keys=2)
        return cand_d[:, :k], cand_i[:, :k]

    def body(carry, j):
        start = j * nbs
        return step(carry, lax.dynamic_slice_in_dim(bank, start, nbs, axis=0), start), None

    carry = (
        jnp.full((qb, k), jnp.inf, jnp.float32),
        jnp.full((qb, k), _BIG_INDEX, jnp.int32),
    )
    if nfull:
        carry, _ = lax.scan(body, carry, jnp.arange(nfull, dtype=jnp.int32))
    if tail:
        blk = jnp.pad(lax.slice_in_dim(bank, nfull * nbs, nl), ((0, nbs - tail), (0, 0)))
        carry = step(carry, blk, nfull * nbs)
    return carry


def _local_knn(
    queries: jax.Array,
    bank: jax.Array,
    k: int,
    n_valid: int,
    offset,
    *,
    qbs: int,
    nbs: int,
    precision,
    compute_dtype,
) -> tuple[jax.Array, jax.Array]:
    """kNN of all queries against the local bank rows (global index = offset + row).

    Rows whose global index is >= n_valid are padding and never returned.
    Returns ([Q, k] float32, [Q, k] int32).
    """
    nq_rows = queries.shape[0]
    qbs = min(qbs, nq_rows)
    if compute_dtype is not None:
        queries = queries.astype(compute_dtype)
        bank = bank.astype(compute_dtype)
    nqb = -(-nq_rows // qbs)

    def one_query_block(i, out):
        out_d, out_i = out
        qs = jnp.minimum(i * qbs, nq_rows - qbs)  # last block shifted back; overlap rewritten
        qblk = lax.dynamic_slice_in_dim(queries, qs, qbs, axis=0)
        bd, bi = _block_topk(qblk, bank, k, n_valid, offset, nbs, precision)
        out_d = lax.dynamic_update_slice_in_dim(out_d, bd, qs, axis=0)
        out_i = lax.dynamic_update_slice_in_dim(out_i, bi, qs, axis=0)
        return out_d, out_i

    out = (jnp.zeros((nq_rows, k), jnp.float32), jnp.zeros((nq_rows, k), jnp.int32))
    if nqb == 1:
        return one_query_block(0, out)
    return lax.fori_loop(0, nqb, one_query_block, out)


def merge_topk(dists: jax.Array, indices: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """Merges candidate lists: the k smallest distances, lowest index on ties.

    Args:
      dists: [Q, C] float32 candidate distances (C >= k).
      indices: [Q, C] int32 candidate global indices.
      k: number to keep.

    Returns:
      ([Q, k] float32 ascending, [Q, k] int32).
    """
    d, i = lax.sort((dists, indices), dimension=1, num_keys=2)
    return d[:, :k], i[:, :k]


def sharded_rows(n: int, shards: int, nbs: int) -> int:
    """Rows per shard: ceil(n / shards) rounded up to whole blocks of ``nbs`` rows."""
    return _cdiv(_cdiv(n, shards), nbs) * nbs


@functools.partial(
    jax.jit,
    static_argnames=("k", "qbs", "nbs", "precision", "compute_dtype", "mesh", "axis_name"),
)
def _knn_impl(queries, bank, *, k, qbs, nbs, precision, compute_dtype, mesh, axis_name):
    n = bank.shape[0]
    if mesh is None:
        d, i = _local_knn(
            queries,
            bank,
            k,
            n,
            jnp.int32(0),
            qbs=qbs,
            nbs=nbs,
            precision=precision,
            compute_dtype=compute_dtype,
        )
    else:
        shards = mesh.shape[axis_name]
        # Every shard holds whole blocks, so global row g sits at position g % nbs of a block
        # of nbs rows on any shard count: the matmul rounding of every distance is the same as
        # on one device and the merged results are bit-identical.
        nl = sharded_rows(n, shards, nbs)
        n_pad = nl * shards
        if n_pad != n:
            bank = jnp.pad(bank, ((0, n_pad - n), (0, 0)))
        bank = lax.with_sharding_constraint(bank, jax.sharding.NamedSharding(mesh, P(axis_name)))

        def per_shard(q, b):
            offset = lax.axis_index(axis_name).astype(jnp.int32) * nl
            ld, li = _local_knn(
                q,
                b,
                k,
                n,
                offset,
                qbs=qbs,
                nbs=nbs,
                precision=precision,
                compute_dtype=compute_dtype,
            )
            gd = lax.all_gather(ld, axis_name)  # [S, Q, k]
            gi = lax.all_gather(li, axis_name)
            q_rows = q.shape[0]
            gd = jnp.moveaxis(gd, 0, 1).reshape(q_rows, shards * k)
            gi = jnp.moveaxis(gi, 0, 1).reshape(q_rows, shards * k)
            return merge_topk(gd, gi, k)

        d, i = jax.shard_map(
            per_shard,
            mesh=mesh,
            in_specs=(P(), P(axis_name)),
            out_specs=(P(), P()),
            check_vma=False,  # outputs are computed from all-gathered values: replicated
        )(queries, bank)
    return jnp.where(d <= 0.0, 0.0, d), i


def knn(
    queries: jax.Array,
    bank: jax.Array,
    k: int = 1,
    *,
    block_size: int | None = None,
    query_block_size: int | None = None,
    precision: Precision = HIGHEST,
    compute_dtype=None,
    mesh: Mesh | None = None,
    axis_name: str = "data",
) -> tuple[jax.Array, jax.Array]:
    """Exact k nearest bank rows of every query (squared Euclidean distance).

    Streams over bank blocks with a running top-k merge and over query blocks, so peak extra
    memory is O(Q.k + query_block_size.block_size). On a single device the bank is never
    copied (only the rows past the last full block are, into one zero-padded tail block); on a
    mesh it is padded once to whole blocks per shard (at most one block per shard).

    Args:
      queries: [Q, D] floating array.
      bank: [N, D] floating array (the memory bank); may be sharded by rows.
      k: neighbours per query, 1 <= k <= N.
      block_size: bank rows per step (default: ``auto_block_size(N)``, about N / 64 between
        256 and 2048). Part of the result's identity: the same block size gives bit-identical
        results on any shard count, different block sizes may differ in the last float bits.
      query_block_size: queries per step (default 1024).
      precision: matmul precision (default HIGHEST: exact float32 products everywhere).
      compute_dtype: None (float32) or e.g. ``jnp.bfloat16``: inputs rounded to it, float32
        accumulation; norms are those of the rounded rows.
      mesh: if given, the bank rows are split over ``mesh.shape[axis_name]`` devices; each
        device searches its shard, candidates are all-gathered and merged. N need not divide
        the number of devices (padding rows are never returned). Queries are replicated.
      axis_name: mesh axis holding the bank rows.

    Returns:
      (sq_dists [Q, k] float32 ascending and >= 0, indices [Q, k] int32 into ``bank``).
      Equal distances are ordered by increasing bank index (also across blocks/devices).

    Raises:
      ValueError: empty or non-2-D inputs, feature dimensions that differ, k outside [1, N],
        unknown ``axis_name``.
    """
    queries = jnp.asarray(queries) if not isinstance(queries, jax.Array) else queries
    bank = jnp.asarray(bank) if not isinstance(bank, jax.Array) else bank
    validate_knn_args(queries, bank, k)
    if mesh is not None and axis_name not in mesh.shape:
        raise ValueError(
            f"axis_name {axis_name!r} is not an axis of the mesh {dict(mesh.shape)}; "
            "pass the name of the axis that splits the bank rows."
        )
    for name, v in (("block_size", block_size), ("query_block_size", query_block_size)):
        if v is not None and (not isinstance(v, (int, np.integer)) or v < 1):
            raise ValueError(f"{name} must be a positive integer or None, got {v!r}.")
    return _knn_impl(
        queries,
        bank,
        k=int(k),
        qbs=int(query_block_size or DEFAULT_QUERY_BLOCK),
        nbs=auto_block_size(int(bank.shape[0]), block_size),
        precision=precision,
        compute_dtype=_canon_dtype(compute_dtype),
        mesh=mesh,
        axis_name=axis_name,
    )
