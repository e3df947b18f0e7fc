"""jad.ops.greedy_coreset vs a numpy transcription of the official sampler and the golden picks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jad.ops import coreset_size, greedy_coreset
from tests.ops import _reference as ref


def _first_divergence(a, b):
    a, b = np.asarray(a), np.asarray(b)
    diff = np.nonzero(a != b)[0]
    return int(diff[0]) if diff.size else len(a)


def test_approximate_matches_numpy_transcription_with_projection():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1500, 256)).astype(np.float32)
    w = rng.uniform(-1 / 16, 1 / 16, (128, 256)).astype(np.float32)
    starts = rng.choice(1500, 10, replace=False)
    idx, radii = greedy_coreset(x, ratio=0.1, projection=w, start_indices=starts, return_radii=True)
    ref_idx, ref_radii = ref.approximate_coreset(x, 150, w, starts)
    np.testing.assert_array_equal(np.asarray(idx), ref_idx)
    # A start row's distance to itself is sqrt(rounding noise of the expansion form), about
    # sqrt(eps * |z|^2) ~ 3e-3 here, divided by 10 in the mean: atol 1e-3 covers it.
    np.testing.assert_allclose(np.asarray(radii), ref_radii, rtol=1e-5, atol=1e-3)
    assert np.asarray(idx).dtype == np.int32


def test_no_projection_when_dim_equals_projection_dim():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((700, 32)).astype(np.float32)
    starts = np.array([5, 100, 3])
    # D == projection_dim: the official `if D != 128` skip; no key needed with given starts
    idx = greedy_coreset(x, num=60, projection_dim=32, start_indices=starts)
    ref_idx, _ = ref.approximate_coreset(x, 60, None, starts)
    np.testing.assert_array_equal(np.asarray(idx), ref_idx)


def test_random_key_path_is_deterministic_and_farthest_point():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((800, 64)).astype(np.float32)
    key = jax.random.key(0)
    a, ra = greedy_coreset(x, ratio=0.05, key=key, projection_dim=16, return_radii=True)
    b = greedy_coreset(x, ratio=0.05, key=key, projection_dim=16)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert len(np.asarray(a)) == int(800 * 0.05)
    assert len(set(np.asarray(a).tolist())) == len(np.asarray(a))  # distinct data: no repeats
    ra = np.asarray(ra)
    assert (np.diff(ra[1:]) <= 0).all()  # coverage radius never increases after the first pick


def test_duplicates_pick_index_zero_like_official():
    x = np.ones((40, 8), np.float32)
    idx = greedy_coreset(x, num=4, key=jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(idx), [0, 0, 0, 0])


def test_exact_method_matches_numpy_transcription():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((600, 24)).astype(np.float32)
    idx, radii = greedy_coreset(x, num=40, method="exact", return_radii=True)
    ref_idx, ref_radii = ref.exact_coreset(x, 40)
    np.testing.assert_array_equal(np.asarray(idx), ref_idx)
    np.testing.assert_allclose(np.asarray(radii), ref_radii, rtol=1e-4)


def test_exact_method_blocked_init_larger_than_block():
    # N > 2048 exercises the row/column blocking of the row-norm initialisation
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2500, 4)).astype(np.float32)
    idx = greedy_coreset(x, num=5, method="exact")
    ref_idx, _ = ref.exact_coreset(x, 5)
    np.testing.assert_array_equal(np.asarray(idx), ref_idx)


def test_random_method():
    idx = np.asarray(
        greedy_coreset(
            np.zeros((100, 3), np.float32), ratio=0.25, key=jax.random.key(2), method="random"
        )
    )
    assert (
        idx.shape == (25,) and len(set(idx.tolist())) == 25 and idx.min() >= 0 and idx.max() < 100
    )


def test_golden_from_projected_features(golden_dir):
    g = np.load(golden_dir / "patchcore.npz")
    idx, radii = greedy_coreset(
        g["coreset_projected"],  # D = 128: projection skipped, like the official sampler
        ratio=0.1,
        start_indices=g["coreset_start_points"],
        return_radii=True,
    )
    idx, radii = np.asarray(idx), np.asarray(radii)
    assert idx.shape == g["coreset_indices"].shape
    div = _first_divergence(idx, g["coreset_indices"])
    # golden README: first 100 picks equal; pick 119 is a float32 rounding tie
    assert div >= 100, div
    np.testing.assert_allclose(radii[:div], g["coreset_selected_distance"][:div], rtol=1e-4)


def test_golden_from_embeddings_and_projection(golden_dir):
    g = np.load(golden_dir / "patchcore.npz")
    emb = g["embeddings"][:3].reshape(-1, 1024)
    idx, radii = greedy_coreset(
        emb,
        ratio=0.1,
        projection=g["coreset_projection"],
        start_indices=g["coreset_start_points"],
        return_radii=True,
    )
    div = _first_divergence(idx, g["coreset_indices"])
    assert div >= 100, div
    np.testing.assert_allclose(
        np.asarray(radii)[:div], g["coreset_selected_distance"][:div], rtol=1e-4
    )


def test_coreset_size_and_errors():
    assert coreset_size(2352, ratio=0.1) == 235  # floor, as int(N * p)
    assert coreset_size(10, num=10) == 10
    x = np.zeros((10, 4), np.float32)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="exactly one"):
        greedy_coreset(x, key=key)
    with pytest.raises(ValueError, match="exactly one"):
        greedy_coreset(x, num=2, ratio=0.5, key=key)
    with pytest.raises(ValueError, match="selects no row"):
        greedy_coreset(x, ratio=0.05, key=key)
    with pytest.raises(ValueError, match=r"in \[1, 10\]"):
        greedy_coreset(x, num=11, key=key)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        greedy_coreset(x, ratio=1.5, key=key)
    with pytest.raises(ValueError, match="method"):
        greedy_coreset(x, num=2, key=key, method="kmeans")
    with pytest.raises(ValueError, match="needs key"):
        greedy_coreset(x, num=2)
    with pytest.raises(ValueError, match="start_indices"):
        greedy_coreset(x, num=2, key=key, start_indices=[0, 10])
    with pytest.raises(ValueError, match="projection must have shape"):
        greedy_coreset(x, num=2, key=key, projection=np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        greedy_coreset(np.zeros((0, 4), np.float32), num=1, key=key)


def test_progress_callback_reports_and_changes_nothing():
    import jax as _jax
    import numpy as _np

    from jad.ops import greedy_coreset as _gc

    x = _np.random.default_rng(3).normal(size=(500, 64)).astype(_np.float32)
    seen = []
    key = _jax.random.PRNGKey(0)
    plain = _np.asarray(_gc(x, num=200, key=key, projection_dim=16))
    with_cb = _np.asarray(
        _gc(x, num=200, key=key, projection_dim=16, progress=lambda n: seen.append(int(n)))
    )
    _jax.effects_barrier()
    _np.testing.assert_array_equal(plain, with_cb)
    assert seen == list(range(2, 201, 2)), seen[:5]


def test_start_rows_are_distinct_in_range_and_cover_small_banks():
    """The approximate sampler's start rows: s distinct rows of [0, n) drawn in O(s) memory
    (no permutation of n), every subset reachable, all rows when s == n."""
    import collections

    from jad.ops.coreset import _distinct_rows

    for n, s in ((1, 1), (5, 5), (11, 10), (100, 99), (1_000_000, 10)):
        for k in range(50):
            r = np.asarray(_distinct_rows(jax.random.key(k), jnp.int32(n), s))
            assert r.dtype == np.int32 and r.shape == (s,)
            assert len(set(r.tolist())) == s and r.min() >= 0 and r.max() < n
    counts = collections.Counter(
        tuple(sorted(np.asarray(_distinct_rows(jax.random.key(k), jnp.int32(5), 2)).tolist()))
        for k in range(2000)
    )
    assert len(counts) == 10  # all C(5, 2) subsets
    assert min(counts.values()) > 140 and max(counts.values()) < 260  # 200 expected each
