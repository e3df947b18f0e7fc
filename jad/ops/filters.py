"""Anomaly-map filters: scipy-compatible Gaussian blur and torch-compatible bilinear resize.

Both are separable linear maps along H and W, so each is applied as two small dense matrices
built at trace time in numpy (``out = A_h @ x @ A_w.T``): the boundary rule (scipy "reflect",
torch's source-index clamping) is folded into the matrices, any radius works on any map size,
and the work is two batched matmuls at ``precision=HIGHEST`` (float32).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jad.ops.distances import HIGHEST


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Normalised 1-D Gaussian taps of ``scipy.ndimage.gaussian_filter``.

    Radius ``int(truncate * sigma + 0.5)``; taps ``exp(-x^2 / (2 sigma^2))`` / sum.

    Returns:
      [2 * radius + 1] float64 numpy array.
    """
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 / (float(sigma) ** 2) * x * x)
    return w / w.sum()


def _reflect_index(i: np.ndarray, n: int) -> np.ndarray:
    """scipy "reflect" (half-sample symmetric, = ``np.pad(mode="symmetric")``) for any offset."""
    period = 2 * n
    i = np.mod(i, period)
    return np.where(i < n, i, period - 1 - i)


@functools.lru_cache(maxsize=64)
def gaussian_matrix(n: int, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """[n, n] float32 matrix ``G`` with ``G @ v`` = scipy 1-D Gaussian filter of ``v`` (reflect)."""
    w = gaussian_kernel1d(sigma, truncate)
    r = (len(w) - 1) // 2
    g = np.zeros((n, n), np.float64)
    rows = np.arange(n)
    for t in range(-r, r + 1):
        np.add.at(g, (rows, _reflect_index(rows + t, n)), w[t + r])
    return g.astype(np.float32)


@functools.lru_cache(maxsize=64)
def bilinear_matrix(out_size: int, in_size: int) -> np.ndarray:
    """[out, in] float32 matrix of torch ``F.interpolate(mode="bilinear", align_corners=False)``.

    Transcribes torch's (non-antialiased) CPU index/weight computation in float32:
    ``src = max(scale * (i + 0.5) - 0.5, 0)`` with ``scale = in / out``, ``i0 = floor(src)``,
    ``i1 = min(i0 + 1, in - 1)``, ``w1 = src - i0``, ``w0 = 1 - w1``. Valid for up- and
    down-sampling (downsampling is plain 2-tap interpolation: no antialiasing, like torch's
    default ``antialias=False``).
    """
    scale = np.float32(in_size) / np.float32(out_size)
    i = np.arange(out_size, dtype=np.float32)
    src = np.maximum(scale * (i + np.float32(0.5)) - np.float32(0.5), np.float32(0.0))
    i0 = np.floor(src).astype(np.int64)
    i0 = np.minimum(i0, in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    w1 = np.clip(src - i0.astype(np.float32), 0.0, 1.0).astype(np.float32)
    w0 = (np.float32(1.0) - w1).astype(np.float32)
    m = np.zeros((out_size, in_size), np.float32)
    rows = np.arange(out_size)
    np.add.at(m, (rows, i0), w0)
    np.add.at(m, (rows, i1), w1)
    return m


def _apply_hw(x: jax.Array, a_h: np.ndarray, a_w: np.ndarray, channels_last: bool) -> jax.Array:
    """Applies ``a_h`` [H', H] along axis 1 and ``a_w`` [W', W] along axis 2 of x."""
    ah = jnp.asarray(a_h)
    aw = jnp.asarray(a_w)
    x = x.astype(jnp.float32)
    if channels_last:  # [N, H, W, C]
        y = jnp.einsum("ih,nhwc->niwc", ah, x, precision=HIGHEST)
        return jnp.einsum("jw,niwc->nijc", aw, y, precision=HIGHEST)
    y = jnp.einsum("ih,nhw->niw", ah, x, precision=HIGHEST)
    return jnp.einsum("niw,jw->nij", y, aw, precision=HIGHEST)


def gaussian_blur(maps: jax.Array, sigma: float = 4.0, truncate: float = 4.0) -> jax.Array:
    """``scipy.ndimage.gaussian_filter(m, sigma)`` of every map (H and W only), float32.

    scipy defaults: mode "reflect" (half-sample symmetric), radius ``int(truncate*sigma+0.5)``
    (16 for sigma 4: 33 taps), separable. Works for any radius relative to the map size.

    Args:
      maps: [N, H, W] (or [H, W]) floating array.
      sigma: standard deviation in pixels (> 0).
      truncate: radius in units of sigma.

    Returns:
      float32 array of the same shape.
    """
    if not float(sigma) > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}.")
    maps = jnp.asarray(maps)
    if maps.ndim not in (2, 3):
        raise ValueError(f"maps must be [N, H, W] or [H, W], got shape {tuple(maps.shape)}.")
    squeeze = maps.ndim == 2
    if squeeze:
        maps = maps[None]
    _, h, w = maps.shape
    out = _apply_hw(
        maps,
        gaussian_matrix(h, float(sigma), float(truncate)),
        gaussian_matrix(w, float(sigma), float(truncate)),
        channels_last=False,
    )
    return out[0] if squeeze else out


def resize_bilinear(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """torch ``F.interpolate(x, size, mode="bilinear", align_corners=False)``, no antialias.

    Matches torch for upsampling and for downsampling (torch's non-antialiased 2-tap formula;
    this is NOT ``jax.image.resize``, which antialiases when shrinking).

    Args:
      x: [N, h, w] or [N, h, w, C] floating array (channels last).
      size: (H, W) output size.

    Returns:
      [N, H, W] or [N, H, W, C] float32.
    """
    x = jnp.asarray(x)
    if x.ndim not in (3, 4):
        raise ValueError(f"x must be [N, h, w] or [N, h, w, C], got shape {tuple(x.shape)}.")
    if len(size) != 2 or min(int(size[0]), int(size[1])) < 1:
        raise ValueError(f"size must be a pair of positive ints (H, W), got {size!r}.")
    out_h, out_w = int(size[0]), int(size[1])
    h, w = x.shape[1], x.shape[2]
    return _apply_hw(
        x, bilinear_matrix(out_h, h), bilinear_matrix(out_w, w), channels_last=x.ndim == 4
    )


def upsample_and_blur(
    scores: jax.Array, size: tuple[int, int], sigma: float = 4.0, truncate: float = 4.0
) -> jax.Array:
    """PatchCore/PBAS anomaly map: bilinear resize of [N, h, w] scores, then Gaussian blur.

    Returns:
      [N, H, W] float32.
    """
    return gaussian_blur(resize_bilinear(scores, size), sigma, truncate)


__all__ = [
    "bilinear_matrix",
    "gaussian_blur",
    "gaussian_kernel1d",
    "gaussian_matrix",
    "resize_bilinear",
    "upsample_and_blur",
]
