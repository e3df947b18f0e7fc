"""The torch PBAS benchmark peer (``jad.benchmarks.torch_pbas``) vs the official code and vs jad.

Golden scenario (``shared/golden/README.md``): heads ``make_inputs.pbas_head_params(0)`` loaded
through jad's layout (``load_from_jad``), three optimiser steps on the stored features of images
0 and 1 with the stored centres, then prediction on all four images; backbone = golden weights
with the BN statistics after the official ``load()``, passed through jad's converter both ways.
Tolerances are the README's suggested port tolerances.
"""

from __future__ import annotations

import numpy as np
import pytest
from jadtest import need

torch = need("torch")

from jad.benchmarks import torch_pbas as tp  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def golden(golden_dir):
    return dict(np.load(golden_dir / "pbas.npz"))


@pytest.fixture(scope="module")
def jad_heads(make_inputs):
    """Official initial heads in jad's layout (numpy): (params, batch_stats)."""
    import jax

    from jad.methods.pbas import heads_from_torch

    return jax.tree.map(np.asarray, heads_from_torch(**make_inputs.pbas_head_params(0)))


@pytest.fixture(scope="module")
def trained(golden, jad_heads):
    """Torch heads after the three golden steps, and the per-step logged values."""
    torch.set_num_threads(2)
    heads = tp.TorchPBASHeads()
    heads.load_from_jad(*jad_heads)
    opt_p, opt_d = tp.make_optimizers(heads)
    feats = torch.from_numpy(golden["features"][0:2])
    centres = torch.from_numpy(golden["centres"])
    logs = [tp.train_step(heads, opt_p, opt_d, feats, centres) for _ in range(3)]
    return heads, logs


@pytest.fixture(scope="module")
def backbones(golden_dir, make_inputs):
    """(NCHW, channels_last) torch WRN50-2 with the golden weights, built from jad variables."""
    from jad.models import convert

    bn_after = dict(np.load(golden_dir / "pbas_backbone_bn_after_load.npz"))
    sd = {**make_inputs.wide_resnet50_2_state_dict(0), **bn_after}
    variables, _ = convert.torch_to_flax(sd, "wide_resnet50_2")
    return tp.backbone_from_jad(variables), tp.backbone_from_jad(variables, channels_last=True)


def test_load_from_jad_gives_the_official_modules(make_inputs, jad_heads):
    heads = tp.TorchPBASHeads()
    heads.load_from_jad(*jad_heads)
    h = make_inputs.pbas_head_params(0)
    official = {
        "projector.weight": h["pre_projection"]["layers.0fc.weight"],
        "projector.bias": h["pre_projection"]["layers.0fc.bias"],
        **{
            f"discriminator.{k.replace('body.block1.', '').replace('tail.0', '3')}": v
            for k, v in h["discriminator"].items()
        },
    }
    ours = heads.state_dict()
    assert set(ours) == set(official)
    for k, v in official.items():
        np.testing.assert_array_equal(ours[k].numpy(), v, err_msg=k)


def test_three_train_steps_match_official_and_jad(golden, jad_heads, trained):
    import jax
    import jax.numpy as jnp
    import optax

    from jad.methods import pbas

    _, logs = trained
    for t, log in enumerate(logs):
        rtol = 1e-5 if t == 0 else 1e-3
        for ours, ref in (
            ("total", "train_loss_total"),
            ("svdd", "train_loss_svdd"),
            ("bce_true", "train_loss_bce_true"),
            ("bce_fake", "train_loss_bce_fake"),
            ("r_fake", "train_r_fake"),
        ):
            np.testing.assert_allclose(log[ours], golden[ref][t], rtol=rtol, err_msg=f"{ours} {t}")
        assert log["p_true"] == pytest.approx(golden["train_p_true"][t], abs=2e-3)
        assert log["p_fake"] == pytest.approx(golden["train_p_fake"][t], abs=2e-3)

    # jad's own step on the same inputs gives the same numbers
    params, stats = jax.tree.map(jnp.asarray, jad_heads)
    tx = pbas.optimizer()
    opt = tx.init(params)
    centres = jnp.asarray(golden["centres"])
    feats = jnp.asarray(golden["features"][0:2])
    step = jax.jit(lambda p, s: pbas.loss_and_grads(p, s, centres, feats, jnp.ones(2)))
    for t, log in enumerate(logs):
        loss, grads, stats, _ = step(params, stats)
        np.testing.assert_allclose(log["total"], float(loss), rtol=1e-5 if t == 0 else 1e-3)
        updates, opt = tx.update(grads, opt, params)
        params = optax.apply_updates(params, updates)


def test_features_match_official(golden, backbones):
    torch.set_num_threads(2)
    x0 = torch.from_numpy(golden["x288"][0:1])
    for backbone, cl in zip(backbones, (False, True), strict=True):
        f = tp.features(backbone, x0, channels_last=cl)
        assert f.shape == (1, 1296, 1536) and f.dtype == torch.float32
        err = np.abs(f.numpy()[0] - golden["features"][0]).max()
        assert err < 1e-4, f"channels_last={cl}: max abs diff {err:.2e}"


def test_predict_matches_official(golden, backbones, trained):
    torch.set_num_threads(2)
    heads, _ = trained
    scores, maps = tp.predict(backbones[0], heads, torch.from_numpy(golden["x288"]))
    assert scores.shape == (4,) and maps.shape == (4, 288, 288)
    np.testing.assert_allclose(scores, golden["pred_image_scores"], atol=5e-4, rtol=0)
    np.testing.assert_allclose(maps, golden["pred_maps"], atol=5e-4, rtol=0)
    ps = tp.patch_scores(heads, torch.from_numpy(golden["features"])).numpy()
    np.testing.assert_allclose(ps, golden["pred_patch_scores"][:3], atol=5e-4, rtol=0)


def test_official_epoch_runs_and_times(golden, backbones, jad_heads):
    """Tiny epoch (2 train images in batches of 1, 1 test image): bookkeeping only."""
    torch.set_num_threads(2)
    heads = tp.TorchPBASHeads()
    heads.load_from_jad(*jad_heads)
    opt_p, opt_d = tp.make_optimizers(heads)
    x = torch.from_numpy(golden["x288"])
    out = tp.official_epoch(
        backbones[0],
        heads,
        opt_p,
        opt_d,
        torch.from_numpy(golden["centres"]),
        x[0:2],
        x[3:4],
        batch_size=1,
    )
    assert len(out["losses"]) == 2 and np.isfinite(out["losses"][-1]["total"])
    assert out["image_scores"].shape == (1,) and out["maps"].shape == (1, 288, 288)
    for key in ("features_s", "steps_s", "test_features_s", "test_scoring_s"):
        assert out[key] > 0
    assert out["total_s"] == pytest.approx(out["features_s"] + out["steps_s"] + out["test_s"])
