"""jad.ops.knn vs numpy brute force, faiss IndexFlatL2 and the PatchCore golden outputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jadtest import need

from jad.ops import knn


def _brute(q, b, k):
    """float64 brute force; stable sort = lowest index first on ties."""
    d = ((q.astype(np.float64)[:, None, :] - b.astype(np.float64)[None]) ** 2).sum(-1)
    i = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, i, 1), i, d


def _check_exact(q, b, k, dist, idx, rtol=1e-5, atol=1e-4):
    """Returned neighbours are true k nearest up to float32 rounding of the expansion form."""
    ref_d, ref_i, full = _brute(q, b, k)
    dist, idx = np.asarray(dist), np.asarray(idx)
    assert dist.shape == idx.shape == (len(q), k)
    assert dist.dtype == np.float32 and idx.dtype == np.int32
    assert (idx >= 0).all() and (idx < len(b)).all()
    np.testing.assert_allclose(dist, ref_d, rtol=rtol, atol=atol)
    # the true distance of every returned index equals the k-th best within tolerance
    np.testing.assert_allclose(np.take_along_axis(full, idx, 1), ref_d, rtol=rtol, atol=atol)
    assert (np.diff(dist, axis=1) >= 0).all()
    # indices equal wherever the k-th/(k+1)-th gaps are not within rounding
    return ref_i


@pytest.mark.parametrize(
    "q_rows,n,d,k,block,qblock",
    [
        (37, 101, 16, 1, 32, 8),  # N and Q not divisible by the blocks
        (37, 101, 16, 5, 32, 8),
        (5, 1, 8, 1, None, None),  # N = 1
        (6, 7, 8, 7, 3, 4),  # k = N, block < k
        (300, 1000, 64, 3, None, None),  # default blocks larger than the data
    ],
)
def test_knn_random_vs_numpy(q_rows, n, d, k, block, qblock):
    rng = np.random.default_rng(q_rows * 1000 + n)
    q = rng.standard_normal((q_rows, d)).astype(np.float32)
    b = rng.standard_normal((n, d)).astype(np.float32)
    dist, idx = knn(q, b, k, block_size=block, query_block_size=qblock)
    ref_i = _check_exact(q, b, k, dist, idx)
    np.testing.assert_array_equal(np.asarray(idx), ref_i)  # random data: no near-ties


def test_knn_duplicates_and_ties_lowest_index_wins_across_blocks():
    rng = np.random.default_rng(5)
    b = rng.standard_normal((50, 8)).astype(np.float32)
    b[[3, 17, 30, 41]] = b[9]  # five identical rows: 3, 9, 17, 30, 41, spread over blocks
    q = np.stack([b[9], b[9] + 1e-3, rng.standard_normal(8).astype(np.float32)])
    for block in (4, 7, 50):
        dist, idx = knn(q, b, 5, block_size=block, query_block_size=2)
        np.testing.assert_array_equal(np.asarray(idx)[0], [3, 9, 17, 30, 41])
        np.testing.assert_array_equal(np.asarray(idx)[1], [3, 9, 17, 30, 41])
        assert np.asarray(dist)[0, 0] == 0.0 and not np.signbit(np.asarray(dist)).any()
        d1, i1 = knn(q, b, 1, block_size=block)
        np.testing.assert_array_equal(np.asarray(i1)[:2, 0], [3, 3])


def test_knn_all_equal_bank_returns_first_indices():
    b = np.ones((23, 4), np.float32)
    q = np.zeros((3, 4), np.float32)
    for k in (1, 4):
        dist, idx = knn(q, b, k, block_size=5)
        np.testing.assert_array_equal(np.asarray(idx), np.tile(np.arange(k), (3, 1)))
        np.testing.assert_array_equal(np.asarray(dist), np.full((3, k), 4.0, np.float32))


def test_knn_integer_valued_ties_exact():
    # small-integer data: every distance is exact in float32, so ties are real ties
    rng = np.random.default_rng(6)
    b = rng.integers(-2, 3, (200, 6)).astype(np.float32)
    q = rng.integers(-2, 3, (40, 6)).astype(np.float32)
    dist, idx = knn(q, b, 6, block_size=16, query_block_size=16)
    ref_d, ref_i, _ = _brute(q, b, 6)
    np.testing.assert_array_equal(np.asarray(dist), ref_d.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(idx), ref_i)


def test_knn_huge_norms():
    # 1e4-scale features: squared norms ~1e9, the expansion form loses ~eps * |x|^2 absolute
    rng = np.random.default_rng(7)
    b = (rng.standard_normal((400, 32)) * 1e4).astype(np.float32)
    q = (b[rng.integers(0, 400, 20)] + rng.standard_normal((20, 32)) * 1e3).astype(np.float32)
    dist, idx = knn(q, b, 3, block_size=64)
    scale = float((q.astype(np.float64) ** 2).sum(1).max() * 4)
    _check_exact(q, b, 3, dist, idx, rtol=1e-5, atol=8 * np.finfo(np.float32).eps * scale)


def test_knn_bf16_compute():
    rng = np.random.default_rng(8)
    b = rng.standard_normal((300, 64)).astype(np.float32)
    q = rng.standard_normal((30, 64)).astype(np.float32)
    d16, i16 = knn(q, b, 1, compute_dtype=jnp.bfloat16)
    ref_d, ref_i, _ = _brute(q, b, 1)
    assert np.asarray(d16).dtype == np.float32
    np.testing.assert_allclose(np.asarray(d16), ref_d, rtol=3e-2)  # bf16 inputs: ~1 %
    assert (np.asarray(i16) == ref_i).mean() >= 0.9


def test_knn_under_jit_and_errors():
    b = jnp.ones((4, 3))
    q = jnp.zeros((2, 3))
    d, i = jax.jit(lambda q, b: knn(q, b, 2))(q, b)
    np.testing.assert_array_equal(np.asarray(i), [[0, 1], [0, 1]])
    with pytest.raises(ValueError, match="larger than the bank"):
        knn(q, b, 5)
    with pytest.raises(ValueError, match="positive integer"):
        knn(q, b, 0)
    with pytest.raises(ValueError, match="empty"):
        knn(q, jnp.zeros((0, 3)))
    with pytest.raises(ValueError, match="empty"):
        knn(jnp.zeros((0, 3)), b)
    with pytest.raises(ValueError, match="same feature dimension"):
        knn(jnp.zeros((2, 4)), b)
    with pytest.raises(ValueError, match="2-D"):
        knn(jnp.zeros((3,)), b)
    with pytest.raises(ValueError, match="block_size"):
        knn(q, b, block_size=0)


def test_knn_vs_faiss():
    faiss = need("faiss")
    rng = np.random.default_rng(9)
    b = rng.standard_normal((3000, 128)).astype(np.float32)
    q = rng.standard_normal((500, 128)).astype(np.float32)
    index = faiss.IndexFlatL2(128)
    index.add(b)
    fd, fi = index.search(q, 4)
    dist, idx = knn(q, b, 4, block_size=1000, query_block_size=128)
    # same expansion formula in float32: values agree to rounding, indices exactly
    np.testing.assert_allclose(np.asarray(dist), fd, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(idx), fi)


def test_knn_golden_patch_scores(golden_dir):
    g = np.load(golden_dir / "patchcore.npz")
    bank = g["memory_bank"]
    emb = g["embeddings"].reshape(-1, bank.shape[1])
    dist, idx = knn(emb, bank, 1)
    # golden README: patch_scores atol 5e-4; nn_indices identical
    np.testing.assert_allclose(np.asarray(dist)[:, 0], g["patch_scores"].ravel(), atol=5e-4)
    np.testing.assert_array_equal(np.asarray(idx)[:, 0], g["nn_indices"].ravel())
    d5, i5 = knn(g["embeddings"][3], bank, 5)
    np.testing.assert_allclose(np.asarray(d5), g["img3_knn5_distances"], atol=5e-4)
    np.testing.assert_array_equal(np.asarray(i5), g["img3_knn5_indices"])
    np.testing.assert_allclose(np.asarray(d5).mean(1), g["img3_knn5_scores"], atol=5e-4)


def test_auto_block_size_depends_on_n_only():
    from jad.ops.knn import auto_block_size, sharded_rows

    assert auto_block_size(3) == 8  # tiny banks: padded to a multiple of 8 rows only
    assert auto_block_size(216) == 216
    assert auto_block_size(16_385) == 384  # ~N / 64, multiple of 128
    assert auto_block_size(50_000) == 896
    assert auto_block_size(10**6) == 2048  # capped
    assert auto_block_size(5000, 64) == 64  # an explicit block size is kept
    # every shard holds whole blocks; padding is at most one block per shard
    for n in (216, 1000, 16_385, 163_856):
        nbs = auto_block_size(n)
        for shards in (1, 2, 8):
            rows = sharded_rows(n, shards, nbs)
            assert rows % nbs == 0 and rows * shards >= n
            assert rows * shards - n < shards * nbs
