"""Pairwise distances in the expansion form used by faiss and the PatchCore sampler.

``||x - y||^2 = ||x||^2 - 2 x.y + ||y||^2``, clamped at 0 (rounding can make it slightly
negative for near-identical rows). All results are float32; the matmul runs at
``precision=HIGHEST`` by default so that GPUs/TPUs do not silently use TF32/bf16 passes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

Precision = lax.Precision | str | None

HIGHEST = lax.Precision.HIGHEST


def _cast(x: jax.Array, compute_dtype) -> jax.Array:
    x = jnp.asarray(x)
    if compute_dtype is not None:
        return x.astype(compute_dtype)
    if x.dtype != jnp.float32:
        return x.astype(jnp.float32)
    return x


def sq_norms(x: jax.Array, *, compute_dtype=None) -> jax.Array:
    """Squared L2 norm of every row.

    Args:
      x: [N, D] floating array.
      compute_dtype: if given (e.g. ``jnp.bfloat16``) the rows are first rounded to it, so the
        norms are consistent with a matmul done in that dtype.

    Returns:
      [N] float32.
    """
    x = _cast(x, compute_dtype).astype(jnp.float32)
    return jnp.sum(x * x, axis=-1)


def inner_products(
    x: jax.Array, y: jax.Array, *, precision: Precision = HIGHEST, compute_dtype=None
) -> jax.Array:
    """``x @ y.T`` with float32 accumulation.

    Args:
      x: [Q, D]; y: [N, D] floating arrays.
      precision: matmul precision (default HIGHEST = true float32 on every backend).
      compute_dtype: None (float32) or a narrower dtype (``jnp.bfloat16``) the inputs are cast
        to; the accumulation stays float32 (``preferred_element_type``).

    Returns:
      [Q, N] float32.
    """
    x = _cast(x, compute_dtype)
    y = _cast(y, compute_dtype)
    return lax.dot_general(
        x,
        y,
        (((1,), (1,)), ((), ())),
        precision=precision,
        preferred_element_type=jnp.float32,
    )


def pairwise_sq_dists(
    x: jax.Array,
    y: jax.Array,
    *,
    precision: Precision = HIGHEST,
    compute_dtype=None,
) -> jax.Array:
    """All squared Euclidean distances between the rows of ``x`` and ``y``.

    Computed as ``max(||x||^2 - 2 x.y + ||y||^2, 0)`` (the form faiss ``IndexFlatL2`` and the
    official PatchCore code use). This materialises the full [Q, N] result; for nearest
    neighbours over a large bank use :func:`jad.ops.knn`, which streams.

    Args:
      x: [Q, D] floating array.
      y: [N, D] floating array.
      precision: matmul precision, default ``lax.Precision.HIGHEST``.
      compute_dtype: None (float32) or e.g. ``jnp.bfloat16``: inputs are rounded to it, the
        matmul accumulates in float32 and the norms are those of the rounded inputs.

    Returns:
      [Q, N] float32, >= 0.
    """
    ip = inner_products(x, y, precision=precision, compute_dtype=compute_dtype)
    xn = sq_norms(x, compute_dtype=compute_dtype)
    yn = sq_norms(y, compute_dtype=compute_dtype)
    d = xn[:, None] + yn[None, :] - 2.0 * ip
    return jnp.where(d <= 0.0, 0.0, d)


def cosine_similarity(
    x: jax.Array, y: jax.Array, eps: float = 1e-12, *, precision: Precision = HIGHEST
) -> jax.Array:
    """Pairwise cosine similarity, rows normalised as ``x / max(||x||, eps)``.

    This is ``torch.nn.functional.normalize(x) @ normalize(y).T`` (a zero row gives 0).

    Args:
      x: [Q, D] floating array.
      y: [N, D] floating array.
      eps: lower bound of the norm.
      precision: matmul precision, default HIGHEST.

    Returns:
      [Q, N] float32 in [-1, 1] (up to rounding).
    """
    x = _cast(x, None)
    y = _cast(y, None)
    xn = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)
    yn = y / jnp.maximum(jnp.linalg.norm(y, axis=-1, keepdims=True), eps)
    return inner_products(xn, yn, precision=precision)
