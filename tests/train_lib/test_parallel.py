"""Data-parallel PBAS steps: 1 vs 8 devices, jit vs pmap, padded vs true-size batches.

Reduction order differs between these runs, so equality is to float tolerance (not bits). What
the tolerances are and why: losses rtol 1e-5 (rounding of the same sums); step-1 gradients 1e-5
of each array's max, except the discriminator's first bias whose gradient is mathematically zero
(BatchNorm follows it; golden README behaviour 7: pure rounding noise); parameters after 3 steps
atol 2 * lr * steps (the golden README's parameter tolerance: Adam turns rounding-size gradients
into steps of about +-lr); the discriminator's BatchNorm running statistics, which are computed
from the outputs of its (so differing) first layer, with the discriminator's parameter tolerance,
as in the golden test.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jad.config_base import pbas as pbas_config
from jad.methods import pbas as P
from jad.methods.common import TrainData
from jad.train_lib.parallel import DataParallel, data_mesh, pad_to, padded_batch_size

LR_P, LR_D = 1e-4, 2e-4


@pytest.fixture(scope="module")
def setup():
    c = pbas_config("synthetic")
    c.data.resize = c.data.crop = 64  # 8 x 8 patches per image
    trainer = P.PBAS(c, backbone=(None, None))
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((16, 64, 1536)).astype(np.float32)
    state = trainer.init(jax.random.PRNGKey(0), pad_to({"features": feats[:8]}, 8))
    state = trainer.init_from_data(
        state, TrainData({"features": feats}, np.arange(16)), np.arange(16)
    )
    # the third batch is uneven: 3 real images padded to 8 (mask 0 for the rest)
    batches = [pad_to({"features": feats[s : s + k]}, 8) for s, k in ((0, 8), (8, 8), (2, 3))]
    return trainer, state, batches


def _run(trainer, state, batches, dp):
    s = dp.put_state(state)
    metrics = []
    for b in batches:
        s, m = dp(s, b)
        metrics.append({k: float(v) for k, v in m.items()})
    return jax.device_get(s), metrics


def _assert_close_runs(a, b):
    (sa, ma), (sb, mb) = a, b
    for x, y in zip(ma, mb, strict=True):
        for k in ("loss", "svdd", "bce_true", "bce_fake", "r_fake"):
            np.testing.assert_allclose(x[k], y[k], rtol=1e-5, err_msg=k)
    steps = len(ma)
    for part, lr in (("projector", LR_P), ("discriminator", LR_D)):
        for u, v in zip(
            jax.tree.leaves(sa.params[part]), jax.tree.leaves(sb.params[part]), strict=True
        ):
            np.testing.assert_allclose(u, v, atol=2 * lr * steps, rtol=0)
    for u, v in zip(jax.tree.leaves(sa.batch_stats), jax.tree.leaves(sb.batch_stats), strict=True):
        np.testing.assert_allclose(u, v, atol=2 * LR_D * steps, rtol=0)
    assert int(sa.step) == int(sb.step) == steps


@pytest.fixture(scope="module")
def one_device(setup):
    trainer, state, batches = setup
    return _run(
        trainer,
        state,
        batches,
        DataParallel(trainer.train_step, mesh=data_mesh(jax.devices()[:1]), donate=False),
    )


def test_eight_devices_jit_equals_one_device(setup, one_device):
    assert jax.device_count() == 8
    trainer, state, batches = setup
    dp = DataParallel(trainer.train_step, mesh=data_mesh(), donate=False)
    assert dp.num_devices == 8
    _assert_close_runs(_run(trainer, state, batches, dp), one_device)


@pytest.mark.slow  # fast tier: tests/methods/test_proxycore.py's pmap test stays
def test_pmap_equals_jit(setup, one_device):
    trainer, state, batches = setup
    dp = DataParallel(trainer.train_step, mesh=data_mesh(), mode="pmap")
    _assert_close_runs(_run(trainer, state, batches, dp), one_device)


@pytest.mark.slow  # fast tier: jit vs 1 device and pmap stay
def test_step_one_gradients_pmap_vs_global(setup):
    trainer, state, batches = setup
    b = batches[2]  # the uneven one: padding must not leak into the statistics
    args = (state.params, state.batch_stats, state.extras["centres"])
    g1 = P.loss_and_grads(*args, jnp.asarray(b["features"][:3]), jnp.ones(3))[1]  # true size
    f = jax.pmap(
        lambda x, m: P.loss_and_grads(*args, x, m, axis_name="d")[1], axis_name="d", out_axes=None
    )
    g8 = f(b["features"].reshape(8, 1, 64, 1536), b["mask"].reshape(8, 1))
    for path, u, v in zip(
        jax.tree_util.tree_leaves_with_path(g8),
        jax.tree.leaves(g8),
        jax.tree.leaves(g1),
        strict=True,
    ):
        name = jax.tree_util.keystr(path[0])
        if "fc1" in name and "bias" in name:
            continue  # mathematically zero gradient (BatchNorm follows): rounding noise only
        np.testing.assert_allclose(u, v, atol=1e-5 * np.abs(v).max(), rtol=0, err_msg=name)


def test_padded_batch_equals_true_size_batch(setup):
    trainer, state, batches = setup
    dp = DataParallel(trainer.train_step, mesh=data_mesh(jax.devices()[:1]), donate=False)
    padded = batches[2]
    true_size = {"features": padded["features"][:3], "mask": np.ones(3, np.float32)}
    a = _run(trainer, state, [padded], dp)
    b = _run(trainer, state, [true_size], dp)
    _assert_close_runs(a, b)


def test_padding_helpers():
    assert (
        padded_batch_size(8, 8) == 8
        and padded_batch_size(8, 3) == 9
        and padded_batch_size(1, 8) == 8
    )
    b = pad_to({"x": np.arange(3)}, 5)
    np.testing.assert_array_equal(b["x"], [0, 1, 2, 0, 0])
    np.testing.assert_array_equal(b["mask"], [1, 1, 1, 0, 0])
    with pytest.raises(AssertionError):
        pad_to({"x": np.arange(6)}, 5)


def test_donated_state_never_deletes_the_callers_arrays(setup):
    """On one device, placing a state must copy: the jit step donates it, and a trainer that
    keeps arrays of its state elsewhere (APC's cached backbone, reused by the next category's
    init) would otherwise find them deleted ("Buffer has been deleted or donated")."""
    trainer, state, batches = setup
    dp = DataParallel(trainer.train_step, mesh=data_mesh(jax.devices()[:1]), donate=True)
    state = jax.device_put(state, jax.devices()[0])
    s, _ = dp(dp.put_state(state), batches[0])
    jax.block_until_ready(s)
    for leaf in jax.tree.leaves(state):
        if isinstance(leaf, jax.Array):
            assert not leaf.is_deleted()
            np.asarray(leaf)  # still readable
