"""Exact k-nearest-neighbour search (squared L2), streamed over bank and query blocks.

Distances are ``max(||q||^2 - 2 q.b + ||b||^2, 0)`` in float32 (the faiss ``IndexFlatL2`` /
PatchCore form). Memory is O(Q.k + query_block.block) beyond the inputs: the [Q, N] distance
matrix is never built. Ties are broken towards the lowest bank index, also across blocks and
devices, so results do not depend on the block sizes or on the number of shards.
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

DEFAULT_BLOCK = 2048  # bank rows per step; [query_block, block] f32 tile = 8 MiB (measured best)
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


def _block_topk(
    q: jax.Array,
    bank: jax.Array,
    bn: jax.Array,
    k: int,
    offset,
    nbs: int,
    precision,
    compute_dtype,
) -> tuple[jax.Array, jax.Array]:
    """k smallest distances of one query block against all local bank rows.

    Args:
      q: [qb, D] queries (float32 or compute_dtype).
      bank: [Nl, D] local bank rows.
      bn: [Nl] float32 squared norms, +inf for rows that must never be returned (padding).
      k: neighbours to keep (<= number of real rows overall).
      offset: global index of local row 0 (int32 scalar, may be traced).
      nbs: bank rows per block (<= Nl).

    Returns:
      ([qb, k] float32 ascending, [qb, k] int32 global indices; lowest index on ties).
    """
    qb = q.shape[0]
    nl = bank.shape[0]
    nblocks = -(-nl // nbs)
    qf = q.astype(jnp.float32)
    qn = jnp.sum(qf * qf, axis=1)
    kk = min(k, nbs)
    local_iota = jnp.arange(nbs, dtype=jnp.int32)

    def body(carry, j):
        best_d, best_i = carry
        # The last block is shifted back to end at nl (no padded copy of the bank); rows it
        # shares with the previous block are masked out by an infinite norm.
        start = jnp.minimum(j * nbs, nl - nbs)
        blk = lax.dynamic_slice_in_dim(bank, start, nbs, axis=0)
        bnb = lax.dynamic_slice_in_dim(bn, start, nbs, axis=0)
        bnb = jnp.where(start + local_iota >= j * nbs, bnb, jnp.inf)
        ip = lax.dot_general(
            q,
            blk,
            (((1,), (1,)), ((), ())),
            precision=precision,
            preferred_element_type=jnp.float32,
        )
        d = qn[:, None] + bnb[None, :] - 2.0 * ip
        gstart = start + offset
        if k == 1:
            # min, then the first column equal to it: two vectorised reductions, much faster
            # on CPU than a variadic argmin reduce.
            d = jnp.maximum(d, 0.0)
            m = jnp.min(d, axis=1)
            a = jnp.min(jnp.where(d == m[:, None], local_iota[None, :], nbs), axis=1)
            a = jnp.minimum(a, nbs - 1)  # NaN rows only; keeps the index in range
            better = m < best_d[:, 0]  # strict: the earlier (lower-index) block wins ties
            new_d = jnp.where(better, m, best_d[:, 0])[:, None]
            new_i = jnp.where(better, a + gstart, best_i[:, 0])[:, None]
            return (new_d, new_i), None
        # +0.0 for every clamped value: top_k orders -0.0 and +0.0 differently.
        d = jnp.where(d <= 0.0, 0.0, d)
        neg, a = lax.top_k(-d, kk)  # stable: lowest column first among equal values
        cand_d = jnp.concatenate([best_d, -neg], axis=1)
        cand_i = jnp.concatenate([best_i, a + gstart], axis=1)
        cand_d, cand_i = lax.sort((cand_d, cand_i), dimension=1, num_keys=2)
        return (cand_d[:, :k], cand_i[:, :k]), None

    init = (
        jnp.full((qb, k), jnp.inf, jnp.float32),
        jnp.full((qb, k), _BIG_INDEX, jnp.int32),
    )
    (best_d, best_i), _ = lax.scan(body, init, jnp.arange(nblocks, dtype=jnp.int32))
    return best_d, best_i


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
    nl = bank.shape[0]
    qbs = min(qbs, nq_rows)
    nbs = min(nbs, nl)
    if compute_dtype is not None:
        queries = queries.astype(compute_dtype)
    bnk = bank.astype(compute_dtype) if compute_dtype is not None else bank
    bn = jnp.sum(jnp.square(bnk.astype(jnp.float32)), axis=1)
    bn = jnp.where(offset + jnp.arange(nl, dtype=jnp.int32) < n_valid, bn, jnp.inf)
    nqb = -(-nq_rows // qbs)

    def one_query_block(i, out):
        out_d, out_i = out
        qs = jnp.minimum(i * qbs, nq_rows - qbs)  # last block shifted back; overlap rewritten
        qblk = lax.dynamic_slice_in_dim(queries, qs, qbs, axis=0)
        bd, bi = _block_topk(qblk, bnk, bn, k, offset, nbs, precision, compute_dtype)
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
        n_pad = -(-n // shards) * shards
        if n_pad != n:
            bank = jnp.pad(bank, ((0, n_pad - n), (0, 0)))
        bank = lax.with_sharding_constraint(bank, jax.sharding.NamedSharding(mesh, P(axis_name)))
        nl = n_pad // shards

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
    memory is O(Q.k + query_block_size.block_size). The bank is never padded or copied on a
    single device (the last block is shifted back and its overlap masked).

    Args:
      queries: [Q, D] floating array.
      bank: [N, D] floating array (the memory bank); may be sharded by rows.
      k: neighbours per query, 1 <= k <= N.
      block_size: bank rows per step (default 2048).
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
        nbs=int(block_size or DEFAULT_BLOCK),
        precision=precision,
        compute_dtype=_canon_dtype(compute_dtype),
        mesh=mesh,
        axis_name=axis_name,
    )
