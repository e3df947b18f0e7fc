"""AdamP (Heo et al., ICLR 2021) as an optax ``GradientTransformation``.

Reproduces ``adamp.AdamP`` from the PyTorch package ``adamp==0.3.0`` step for step. Per
parameter ``p`` with gradient ``g`` at step ``t`` (1-based), all in ``p``'s dtype:

1. Adam moments: ``m = b1 m + (1 - b1) g``; ``v = b2 v + (1 - b2) g^2``;
   ``bc1 = 1 - b1^t``, ``bc2 = 1 - b2^t``; ``denom = sqrt(v) / sqrt(bc2) + eps``;
   ``perturb = m / denom`` or, with ``nesterov``, ``(b1 m + (1 - b1) g) / denom``.
2. Scale-invariance test, only for ``p.ndim > 1`` (and a non-None channel axis). Two views of
   ``p`` are tried in order, the *channel view* (one row per output channel: the channel axis
   is kept, every other axis is reduced) and the *layer view* (one row: the whole tensor).
   For a view with row size ``n``, the view matches if
   ``max_rows |cos(g_row, p_row)| < delta / sqrt(n)``, with torch's
   ``cos(x, y) = sum(x / max(|x|, eps) * y / max(|y|, eps))``. For the first matching view the
   radial part is removed per row: ``p_n = p_row / (|p_row| + eps)``,
   ``perturb_row -= p_n * sum(p_n * perturb_row)``, and the weight-decay factor becomes
   ``wd_ratio`` (otherwise 1). If neither view matches, ``perturb`` is left as is.
3. Decoupled weight decay with the current learning rate, then the step (the decay does not
   feed into ``perturb``, so the order only matters for rounding)::

     p <- p * (1 - lr * weight_decay * wd_factor) - lr / bc1 * perturb

:func:`scale_by_adamp` returns ``perturb / bc1 + weight_decay * wd_factor * p`` and
:func:`adamp` chains it with ``optax.scale_by_learning_rate``, so that ``p + updates`` is
exactly the expression above.

**Channel axis.** torch's channel view is ``p.view(p.size(0), -1)``: the output channel is
axis 0 of a ``Linear`` weight ``[out, in]`` or a conv weight ``OIHW``. In Flax a ``Dense``
kernel is ``[in, out]`` and a conv kernel ``HWIO``, so the output channel is the *last* axis;
hence ``channel_axis=-1`` by default. ``channel_axis`` is one of:

- an ``int``: the output-channel axis of every leaf with ``ndim > 1`` (negative counts from the
  end);
- a pytree with the structure of the params whose leaves are ``int`` or ``None``;
- a callable ``(path, leaf) -> int | None`` called once per leaf at trace time, with ``path``
  the ``jax.tree_util`` key path of the leaf (``jax.tree_util.keystr(path)`` gives a string).

``None`` for a leaf means "treat it like a 1-D parameter": no projection, weight-decay
factor 1. 1-D and 0-D leaves are never projected, whatever their axis says. Example: a proxy
matrix stored as ``[K, D]`` with one proxy per row wants ``channel_axis=0``.

Everything is jit-friendly: the choice of view is made with ``jnp.where``, never with Python
control flow on traced values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

KeyPath = tuple[Any, ...]
ChannelAxis = int | None | Callable[[KeyPath, jax.Array], int | None] | Any


class ScaleByAdamPState(NamedTuple):
    """State of :func:`scale_by_adamp`.

    Attributes:
      count: int32 scalar, number of updates done so far.
      mu: first moments, same structure / shapes / dtypes as the params.
      nu: second moments, same structure / shapes / dtypes as the params.
    """

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates


def _bias_correction(decay: float, count: jax.Array) -> jax.Array:
    """``1 - decay**count`` as a float32 scalar.

    Computed as ``-expm1(count * log(decay))`` with ``log(decay)`` in float64 on the host:
    the naive float32 ``1 - decay**count`` loses ~1e-5 relative accuracy at ``count=1`` for
    ``decay=0.999`` (``float32(0.999)`` is off by 1.3e-8, and ``1 - 0.999 = 1e-3``), while
    torch evaluates the bias corrections in Python float64.
    """
    t = count.astype(jnp.float32)
    if isinstance(decay, int | float):
        if decay == 0:
            return jnp.ones((), jnp.float32)
        log_decay = math.log(decay)
    else:
        log_decay = jnp.log(jnp.asarray(decay, jnp.float32))
    return -jnp.expm1(t * log_decay)


def _resolve_channel_axes(params: optax.Params, channel_axis: ChannelAxis) -> list[int | None]:
    """Output-channel axis (normalised to ``[0, ndim)``) or None, per leaf in flatten order."""
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(params)
    if callable(channel_axis):
        axes = [channel_axis(path, leaf) for path, leaf in leaves_with_path]
    elif channel_axis is None or isinstance(channel_axis, int):
        axes = [channel_axis] * len(leaves_with_path)
    else:
        axes = treedef.flatten_up_to(channel_axis)
    resolved: list[int | None] = []
    for (path, leaf), axis in zip(leaves_with_path, axes, strict=True):
        ndim = jnp.ndim(leaf)
        if axis is None or ndim <= 1:
            resolved.append(None)
            continue
        if not isinstance(axis, int) or isinstance(axis, bool):
            raise TypeError(
                f"channel_axis for {jax.tree_util.keystr(path)} must be an int or None, "
                f"got {axis!r}"
            )
        if not -ndim <= axis < ndim:
            raise ValueError(
                f"channel_axis={axis} out of range for {jax.tree_util.keystr(path)} "
                f"with shape {jnp.shape(leaf)}"
            )
        resolved.append(axis % ndim)
    return resolved


def _abs_cosine(x: jax.Array, y: jax.Array, axes: tuple[int, ...], eps: float) -> jax.Array:
    """``|torch.nn.functional.cosine_similarity|`` over ``axes`` (kept as size-1 dims).

    torch (>= 1.12, checked on 2.13) clamps each norm separately before the dot product:
    ``sum(x / max(|x|, eps) * y / max(|y|, eps))``; a zero gradient therefore gives 0.
    """
    x_norm = jnp.maximum(jnp.sqrt(jnp.sum(x * x, axis=axes, keepdims=True)), eps)
    y_norm = jnp.maximum(jnp.sqrt(jnp.sum(y * y, axis=axes, keepdims=True)), eps)
    return jnp.abs(jnp.sum((x / x_norm) * (y / y_norm), axis=axes, keepdims=True))


def _project(
    param: jax.Array,
    grad: jax.Array,
    perturb: jax.Array,
    channel_axis: int,
    delta: float,
    wd_ratio: float,
    eps: float,
) -> tuple[jax.Array, jax.Array]:
    """AdamP's projection of one leaf with ``ndim > 1``.

    Returns:
      ``(perturb, wd_factor)``: ``perturb`` with the shape / dtype of ``param``, its radial part
      removed per row of the first scale-invariant view (unchanged if none is), and the float32
      scalar weight-decay factor (``wd_ratio`` if projected, else 1).
    """
    ndim = param.ndim
    views = (
        tuple(a for a in range(ndim) if a != channel_axis),  # channel view
        tuple(range(ndim)),  # layer view
    )
    candidates = []
    for axes in views:
        row_size = math.prod(param.shape[a] for a in axes)
        is_invariant = jnp.max(_abs_cosine(grad, param, axes, eps)) < delta / math.sqrt(row_size)
        p_n = param / (jnp.sqrt(jnp.sum(param * param, axis=axes, keepdims=True)) + eps)
        projected = perturb - p_n * jnp.sum(p_n * perturb, axis=axes, keepdims=True)
        candidates.append((is_invariant, projected))
    (use_channel, by_channel), (use_layer, by_layer) = candidates
    perturb = jnp.where(use_channel, by_channel, jnp.where(use_layer, by_layer, perturb))
    wd_factor = jnp.where(use_channel | use_layer, jnp.float32(wd_ratio), jnp.float32(1.0))
    return perturb, wd_factor


def scale_by_adamp(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    delta: float = 0.1,
    wd_ratio: float = 0.1,
    nesterov: bool = False,
    channel_axis: ChannelAxis = -1,
) -> optax.GradientTransformation:
    """AdamP's learning-rate-free direction (see the module docstring for the exact maths).

    ``update(updates, state, params)`` requires ``params`` (the projection and the weight decay
    use them) and returns, per leaf, ``perturb / bc1 + weight_decay * wd_factor * params`` with
    the leaf's shape and dtype; the caller scales it by ``-learning_rate``.

    Args:
      b1, b2: Adam decay rates in ``[0, 1)`` (Python floats give float64-accurate bias
        corrections).
      eps: added to the bias-corrected ``sqrt(v)``; also the eps of the cosine similarity and of
        the weight normalisation in the projection (as in the torch package).
      weight_decay: decoupled weight decay (>= 0), multiplied by ``wd_factor``.
      delta: threshold of the scale-invariance test (``max |cos| < delta / sqrt(row size)``).
      wd_ratio: weight-decay factor for leaves whose update was projected.
      nesterov: use the Nesterov momentum direction.
      channel_axis: output-channel axis: int, pytree of int / None, or
        ``(path, leaf) -> int | None``; see the module docstring.
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")

    def init_fn(params: optax.Params) -> ScaleByAdamPState:
        return ScaleByAdamPState(
            count=jnp.zeros([], jnp.int32),
            mu=jax.tree.map(jnp.zeros_like, params),
            nu=jax.tree.map(jnp.zeros_like, params),
        )

    def update_fn(
        updates: optax.Updates, state: ScaleByAdamPState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, ScaleByAdamPState]:
        if params is None:
            raise ValueError("scale_by_adamp needs `params` (pass them to `update`).")
        count = optax.safe_int32_increment(state.count)
        bc1 = _bias_correction(b1, count)
        sqrt_bc2 = jnp.sqrt(_bias_correction(b2, count))

        treedef = jax.tree.structure(params)
        grads = treedef.flatten_up_to(updates)
        mus = treedef.flatten_up_to(state.mu)
        nus = treedef.flatten_up_to(state.nu)
        axes = _resolve_channel_axes(params, channel_axis)

        new_updates, new_mus, new_nus = [], [], []
        leaves = treedef.flatten_up_to(params)
        for g, p, m, v, axis in zip(grads, leaves, mus, nus, axes, strict=True):
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            denom = (jnp.sqrt(v) / sqrt_bc2 + eps).astype(p.dtype)
            perturb = (b1 * m + (1 - b1) * g) / denom if nesterov else m / denom
            wd_factor = jnp.float32(1.0)
            if axis is not None and p.size > 0:
                perturb, wd_factor = _project(p, g, perturb, axis, delta, wd_ratio, eps)
            direction = perturb / bc1
            if weight_decay:
                direction = direction + (weight_decay * wd_factor) * p
            new_updates.append(direction.astype(p.dtype))
            new_mus.append(m)
            new_nus.append(v)

        unflatten = treedef.unflatten
        return unflatten(new_updates), ScaleByAdamPState(
            count=count, mu=unflatten(new_mus), nu=unflatten(new_nus)
        )

    return optax.GradientTransformation(init_fn, update_fn)


def adamp(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    delta: float = 0.1,
    wd_ratio: float = 0.1,
    nesterov: bool = False,
    channel_axis: ChannelAxis = -1,
) -> optax.GradientTransformation:
    """AdamP optimizer, equivalent to ``adamp.AdamP`` (``adamp==0.3.0``) step for step.

    Args:
      learning_rate: float or optax schedule ``count -> lr`` (evaluated at 0 for the first
        step, like a torch LR scheduler that sets ``group['lr']`` before each ``step()``); it
        scales both the Adam step and the decoupled weight decay.
      b1, b2, eps, weight_decay, delta, wd_ratio, nesterov, channel_axis: see
        :func:`scale_by_adamp`. Defaults are the torch package's, except ``channel_axis=-1``
        (Flax kernels ``[in, out]`` / ``HWIO`` have the output channel last).

    Returns:
      An ``optax.GradientTransformation`` whose ``update`` needs ``params``; apply with
      ``optax.apply_updates(params, updates)``.
    """
    return optax.chain(
        scale_by_adamp(
            b1=b1,
            b2=b2,
            eps=eps,
            weight_decay=weight_decay,
            delta=delta,
            wd_ratio=wd_ratio,
            nesterov=nesterov,
            channel_axis=channel_axis,
        ),
        optax.scale_by_learning_rate(learning_rate),
    )
