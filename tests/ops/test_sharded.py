"""Sharded kNN / coreset on the 8 simulated CPU devices == single-device results."""

import jax
import numpy as np
import pytest
from jadtest import missing
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jad.ops import greedy_coreset, knn

pytestmark = pytest.mark.determinism


@pytest.fixture(scope="module")
def mesh():
    devs = jax.devices()
    if len(devs) < 8:
        missing("needs 8 (simulated) devices; see tests/conftest.py")
    return Mesh(np.array(devs[:8]), ("data",))


@pytest.mark.parametrize("n,k", [(1001, 1), (1001, 5), (3, 3), (64, 8)])
def test_knn_sharded_equals_single(mesh, n, k):
    rng = np.random.default_rng(n + k)
    b = rng.standard_normal((n, 32)).astype(np.float32)
    b[n // 2] = b[1]  # a duplicate in another shard: the lower index must win
    q = np.concatenate([b[1:2], rng.standard_normal((40, 32)).astype(np.float32)])
    d1, i1 = knn(q, b, k, block_size=128)
    d8, i8 = knn(q, b, k, block_size=128, mesh=mesh)
    np.testing.assert_array_equal(np.asarray(i8), np.asarray(i1))  # bit-exact indices
    np.testing.assert_array_equal(np.asarray(d8), np.asarray(d1))  # and bit-exact distances
    assert np.asarray(i8).max() < n  # padding rows never returned
    if k > 1 and n > 3:
        assert np.asarray(i8)[0, :2].tolist() == [1, n // 2]


@pytest.mark.parametrize(
    "n",  # the fast tier keeps 1000 (several blocks and shards, padding); all in the whole suite
    [
        pytest.param(216, marks=pytest.mark.slow),
        pytest.param(432, marks=pytest.mark.slow),
        1000,
        pytest.param(5000, marks=pytest.mark.slow),
    ],
)
def test_knn_bit_identical_on_1_2_4_8_devices(n):
    """The portability bug: XLA:CPU matmul rounding depends on the block's row count, so a
    sharded search whose blocks were sized by the shard (27 rows of 216 on 8 devices, 54 on 4)
    differed from one device in the last bits (on AVX-512 for 432/4 and 1000/*, on AVX2 also
    216/8). Blocks are now sized from N alone and every shard holds whole blocks."""
    devs = np.array(jax.devices())
    bank = jax.random.normal(jax.random.key(n), (n, 1024))
    q = jax.random.normal(jax.random.key(1), (600, 1024)) * 0.3 + bank[0]
    for k in (1, 3):
        d1, i1 = knn(q, bank, k)
        for shards in (2, 4, 8):
            d, i = knn(q, bank, k, mesh=Mesh(devs[:shards], ("data",)))
            np.testing.assert_array_equal(np.asarray(d), np.asarray(d1), err_msg=f"{shards=} {k=}")
            np.testing.assert_array_equal(np.asarray(i), np.asarray(i1), err_msg=f"{shards=} {k=}")


def test_knn_presharded_bank(mesh):
    rng = np.random.default_rng(3)
    b = jax.device_put(
        rng.standard_normal((800, 16)).astype(np.float32), NamedSharding(mesh, P("data"))
    )
    q = rng.standard_normal((10, 16)).astype(np.float32)
    d8, i8 = knn(q, b, 2, mesh=mesh)
    d1, i1 = knn(q, np.asarray(b), 2)
    np.testing.assert_array_equal(np.asarray(i8), np.asarray(i1))
    np.testing.assert_array_equal(np.asarray(d8), np.asarray(d1))


@pytest.mark.parametrize("n", [2352, 1003])  # divisible by 8 and not (padding)
def test_coreset_sharded_bit_exact(mesh, n, golden_dir):
    g = np.load(golden_dir / "patchcore.npz")
    z = g["coreset_projected"][:n]
    st = g["coreset_start_points"] % n
    a, ra = greedy_coreset(z, ratio=0.1, start_indices=st, return_radii=True, mesh=mesh)
    b, rb = greedy_coreset(z, ratio=0.1, start_indices=st, return_radii=True)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(ra), np.asarray(rb))  # bit-identical radii too


def test_coreset_sharded_with_key_projection_and_tiny_n(mesh):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((301, 64)).astype(np.float32)
    key = jax.random.key(7)
    a = greedy_coreset(x, num=30, key=key, projection_dim=16, mesh=mesh)
    b = greedy_coreset(x, num=30, key=key, projection_dim=16)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # N = 5 < 8 devices: 3 shards are pure padding; all 5 real rows get picked, never a pad
    t = rng.standard_normal((5, 4)).astype(np.float32)
    idx = np.asarray(greedy_coreset(t, num=5, key=key, mesh=mesh))
    assert sorted(idx.tolist()) == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(idx, np.asarray(greedy_coreset(t, num=5, key=key)))


@pytest.mark.parametrize("method", ["approximate", "exact"])
def test_coreset_of_a_caller_padded_array_equals_the_unpadded(mesh, method):
    """``num_rows``: a multi-process run pads its global array to the device count with zero rows
    (equal shards); the picks, radii and start rows are those of the unpadded rows."""
    x = np.random.default_rng(6).standard_normal((203, 24)).astype(np.float32)
    padded = np.concatenate([x, np.zeros((5, 24), np.float32)])  # 208 = 26 x 8
    kw = dict(num=20, key=jax.random.key(3), projection_dim=8, method=method, return_radii=True)
    a, ra = greedy_coreset(padded, num_rows=203, mesh=mesh, **kw)
    b, rb = greedy_coreset(x, **kw)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(ra), np.asarray(rb))
    with pytest.raises(ValueError, match="num_rows"):
        greedy_coreset(padded, num_rows=209, mesh=mesh, **kw)
    with pytest.raises(ValueError, match="sharded runs"):
        greedy_coreset(padded, num_rows=203, **kw)


def test_coreset_sharded_exact_method(mesh):
    x = np.random.default_rng(5).standard_normal((203, 6)).astype(np.float32)
    a = greedy_coreset(x, num=20, method="exact", mesh=mesh)
    b = greedy_coreset(x, num=20, method="exact")
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bad_axis_name(mesh):
    x = np.zeros((16, 4), np.float32)
    with pytest.raises(ValueError, match="not an axis"):
        knn(x, x, mesh=mesh, axis_name="model")
    with pytest.raises(ValueError, match="not an axis"):
        greedy_coreset(x, num=2, key=jax.random.key(0), mesh=mesh, axis_name="model")
