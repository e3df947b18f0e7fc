"""jad.ops.distances vs numpy float64."""

import jax.numpy as jnp
import numpy as np

from jad.ops import cosine_similarity, pairwise_sq_dists, sq_norms


def _ref_sq(x, y):
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)


def test_pairwise_sq_dists_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((17, 33)).astype(np.float32)
    y = rng.standard_normal((29, 33)).astype(np.float32)
    d = np.asarray(pairwise_sq_dists(x, y))
    assert d.shape == (17, 29) and d.dtype == np.float32
    # float32 expansion form: error ~ eps * (|x|^2 + |y|^2)
    np.testing.assert_allclose(d, _ref_sq(x, y), rtol=1e-5, atol=1e-4)


def test_pairwise_sq_dists_identical_rows_clamped_to_zero():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((8, 64)) * 100).astype(np.float32)
    d = np.asarray(pairwise_sq_dists(x, x))
    assert (d >= 0).all()
    assert not np.signbit(d).any()  # no -0.0
    # diagonal is pure rounding noise of the expansion form: bounded by eps * 4|x|^2
    bound = 4 * np.finfo(np.float32).eps * 4 * (x.astype(np.float64) ** 2).sum(1)
    assert (np.diag(d) <= bound).all()


def test_pairwise_sq_dists_bf16_close_to_fp32():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((16, 128)).astype(np.float32)
    y = rng.standard_normal((20, 128)).astype(np.float32)
    d16 = np.asarray(pairwise_sq_dists(x, y, compute_dtype=jnp.bfloat16))
    assert d16.dtype == np.float32
    # bf16 rounding of the inputs (8 bits of mantissa): ~1 % relative on distances ~256
    np.testing.assert_allclose(d16, _ref_sq(x, y), rtol=3e-2)
    xb = np.asarray(jnp.asarray(x).astype(jnp.bfloat16).astype(jnp.float32))
    yb = np.asarray(jnp.asarray(y).astype(jnp.bfloat16).astype(jnp.float32))
    # ... and exact up to float32 rounding w.r.t. the rounded inputs
    np.testing.assert_allclose(d16, _ref_sq(xb, yb), rtol=1e-5, atol=1e-3)


def test_sq_norms():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(np.asarray(sq_norms(x)), (x**2).sum(1))


def test_cosine_similarity_matches_torch_normalize_formula():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 7)).astype(np.float32)
    y = rng.standard_normal((6, 7)).astype(np.float32)
    y[2] = 0.0  # zero row -> similarity 0 (x / max(|x|, eps))
    c = np.asarray(cosine_similarity(x, y))
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    yn = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
    np.testing.assert_allclose(c, xn @ yn.T, atol=1e-6)
    assert np.all(c[:, 2] == 0)
