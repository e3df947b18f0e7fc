"""Batch reductions that mean the same thing under ``jax.jit`` and under ``jax.pmap``.

A train step written with these helpers computes the loss over the *global* batch whether the
batch is one array (``jit``, possibly sharded over devices: ``axis_name=None``) or split over a
pmapped axis (``axis_name="data"``): every sum over the batch is ``psum``-ed over the axis.

Gradients under pmap: define the loss a device differentiates as its *local contribution* to the
global mean (local sum / global count, with batch statistics such as BatchNorm moments computed
from psum-ed sums), then ``psum`` the gradients (:func:`sync_grads`). The sum over devices of the
local contributions is the global loss, and with JAX's psum transpose the psum of the local
gradients is the global gradient, including the paths through shared batch statistics (checked
against the jit gradient in ``tests/ops/test_reduce.py``).

Padding: rows with ``mask == 0`` (the pad rows of an uneven last batch) contribute nothing to any
sum, count, mean or variance.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def batch_sum(x: jax.Array, axis_name: str | None = None, axis=0) -> jax.Array:
    """Sum over the batch ``axis`` (and over the pmapped ``axis_name`` if given)."""
    s = jnp.sum(x, axis=axis)
    return lax.psum(s, axis_name) if axis_name else s


def masked_sum(
    x: jax.Array, mask: jax.Array | None, axis_name: str | None = None, axis=0
) -> jax.Array:
    """Sum of ``x`` over rows with ``mask != 0`` ([N, ...] and [N] -> [...])."""
    if mask is not None:
        m = mask.astype(x.dtype).reshape(mask.shape + (1,) * (x.ndim - mask.ndim))
        x = x * m
    return batch_sum(x, axis_name, axis)


def count(mask: jax.Array | None, n: int, axis_name: str | None = None) -> jax.Array:
    """Number of real rows (float32): ``sum(mask)`` over the global batch, or ``n`` per device."""
    local = jnp.float32(n) if mask is None else jnp.sum(mask.astype(jnp.float32))
    return lax.psum(local, axis_name) if axis_name else local


def masked_mean(
    x: jax.Array, mask: jax.Array | None = None, axis_name: str | None = None
) -> jax.Array:
    """Global mean of ``x`` [N, ...] over the real rows -> [...]. Not a loss contribution: use
    :func:`loss_contribution` for the term a device differentiates under pmap."""
    return masked_sum(x, mask, axis_name) / count(mask, x.shape[0], axis_name)


def loss_contribution(
    x: jax.Array, mask: jax.Array | None = None, axis_name: str | None = None
) -> jax.Array:
    """This device's share of the global mean of ``x`` over real rows: local sum / global count.

    Equals :func:`masked_mean` when ``axis_name`` is None (jit: the global batch is local).
    """
    n = count(mask, x.shape[0], axis_name)
    return masked_sum(x, mask, None) / n


def sync_grads(grads, axis_name: str | None = None):
    """``psum`` of the per-device gradients of :func:`loss_contribution` terms (no-op for jit)."""
    return jax.tree.map(lambda g: lax.psum(g, axis_name), grads) if axis_name else grads


def global_value(x: jax.Array, axis_name: str | None = None) -> jax.Array:
    """Sum of per-device loss contributions = the global value (for logging); identity for jit."""
    return lax.psum(x, axis_name) if axis_name else x
