"""Backbone + patch features vs the official PyTorch outputs in ../shared/golden.

Weights: ``make_inputs.wide_resnet50_2_state_dict(0)`` with the ``*_backbone_bn_after_load.npz``
statistics loaded over them (golden README, behaviour 1). Tolerances from the golden README:
layer2 / layer3 / embeddings / features atol 1e-4; preprocessing exact; BN statistics after the
replayed load() update atol 1e-4 + rtol 1e-4 (official 1- vs 2-thread runs differ by 2.1e-6).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jad.models import convert
from jad.models.features import patchcore_features, pbas_features, replay_load_bn_update
from jad.models.wide_resnet import wide_resnet50_2

HIGHEST = jax.lax.Precision.HIGHEST


@pytest.fixture(scope="module")
def golden_sd(make_inputs):
    return make_inputs.wide_resnet50_2_state_dict(0)


@pytest.fixture(scope="module")
def module():
    return wide_resnet50_2(precision=HIGHEST)


def _after_load(golden_dir, golden_sd, kind):
    stats = dict(np.load(golden_dir / f"{kind}_backbone_bn_after_load.npz"))
    assert len(stats) == 159
    variables, _ = convert.torch_to_flax({**golden_sd, **stats}, "wide_resnet50_2")
    return variables, stats


def _images(make_inputs, resize, crop):
    x = np.stack([make_inputs.preprocess(im, resize, crop) for im in make_inputs.images()])
    return x.transpose(0, 2, 3, 1)  # NHWC


def test_patchcore_golden(golden_dir, make_inputs, golden_sd, module):
    g = np.load(golden_dir / "patchcore.npz")
    variables, _ = _after_load(golden_dir, golden_sd, "patchcore")
    x = _images(make_inputs, 256, 224)
    np.testing.assert_array_equal(x, g["x224"].transpose(0, 2, 3, 1))
    out = jax.jit(lambda v, x: module.apply(v, x, stages=("layer2", "layer3")))(variables, x[:1])
    np.testing.assert_allclose(
        np.asarray(out["layer2"]), g["layer2_img0"].transpose(0, 2, 3, 1), atol=1e-4, rtol=0
    )
    np.testing.assert_allclose(
        np.asarray(out["layer3"]), g["layer3_img0"].transpose(0, 2, 3, 1), atol=1e-4, rtol=0
    )
    emb = jax.jit(lambda v, x: patchcore_features(module, v, x))(variables, x)
    assert emb.shape == (4, 784, 1024)
    np.testing.assert_allclose(np.asarray(emb), g["embeddings"], atol=1e-4, rtol=0)


def test_pbas_golden(golden_dir, make_inputs, golden_sd, module):
    g = np.load(golden_dir / "pbas.npz")
    variables, _ = _after_load(golden_dir, golden_sd, "pbas")
    x = _images(make_inputs, 288, 288)
    np.testing.assert_array_equal(x, g["x288"].transpose(0, 2, 3, 1))
    feats = jax.jit(lambda v, x: pbas_features(module, v, x))(variables, x[:3])
    assert feats.shape == (3, 1296, 1536)
    np.testing.assert_allclose(np.asarray(feats), g["features"], atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "kind,size,deepest",
    [("patchcore", 224, "layer3"), pytest.param("pbas", 288, "layer4", marks=pytest.mark.slow)],
)
def test_replay_load_bn_update(golden_dir, golden_sd, module, kind, size, deepest):
    _, stats = _after_load(golden_dir, golden_sd, kind)
    base, _ = convert.torch_to_flax(golden_sd, "wide_resnet50_2")
    replayed = replay_load_bn_update(module, base, size, deepest)
    assert replayed["params"] is base["params"]
    got = convert.flax_to_torch(replayed, "wide_resnet50_2")
    moved = 0
    for k, v in stats.items():
        if k.endswith("num_batches_tracked"):
            continue
        np.testing.assert_allclose(got[k], v, atol=1e-4, rtol=1e-4, err_msg=k)
        moved += not np.array_equal(v, golden_sd[k])
    # PatchCore's load() leaves layer4 alone (10 BNs = 20 stats), PBAS's moves all 53 BNs
    assert moved == {"patchcore": 106 - 20, "pbas": 106}[kind]
