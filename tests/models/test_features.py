"""Patch features vs a literal numpy transcription of the official pipeline.

Reference (float64 numpy): unfold 3x3 (zero pad, (c, ky, kx) order) -> bilinear resize of every
unfolded component to the first layer's grid (torch align_corners=False formula, per pixel) ->
adaptive_avg_pool1d per layer -> stack -> adaptive_avg_pool1d. The reference's pieces are checked
against torch's own Unfold / interpolate / adaptive_avg_pool1d. Tolerance: atol 2e-6 (float32
features of O(1) values vs the float64 reference).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jadtest import need
from model_helpers import random_state_dict

from jad.models import convert
from jad.models.features import (
    aggregate_patch_features,
    feature_grid,
    make_feature_fn,
    patchcore_features,
    plan_layers,
    resize_bilinear,
)
from jad.models.wide_resnet import ARCHS
from jad.ops import bilinear_matrix

torch = need("torch")  # the torch reference: skips without torch, fails under CI
F = torch.nn.functional


# ---------------------------------------------------------------------------------------------
# literal numpy reference
# ---------------------------------------------------------------------------------------------
def np_unfold(x: np.ndarray) -> np.ndarray:
    b, h, w, c = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((b, h, w, c, 3, 3), x.dtype)
    for ky in range(3):
        for kx in range(3):
            out[..., ky, kx] = xp[:, ky : ky + h, kx : kx + w, :]
    return out.reshape(b, h, w, c * 9)


def np_adaptive_pool1d(v: np.ndarray, out: int) -> np.ndarray:
    n = v.shape[-1]
    cols = [
        v[..., math.floor(i * n / out) : math.ceil((i + 1) * n / out)].mean(-1) for i in range(out)
    ]
    return np.stack(cols, axis=-1)


def np_bilinear(x: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """torch upsample_bilinear2d, align_corners=False, transcribed per output pixel."""
    b, h, w, c = x.shape
    out = np.zeros((b, hw[0], hw[1], c), x.dtype)

    def src(d, n_in, n_out):
        s = max((d + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = int(s)
        i1 = i0 + 1 if i0 < n_in - 1 else i0
        return i0, i1, s - i0

    for Y in range(hw[0]):
        y0, y1, ly = src(Y, h, hw[0])
        for X in range(hw[1]):
            x0, x1, lx = src(X, w, hw[1])
            out[:, Y, X] = (1 - ly) * ((1 - lx) * x[:, y0, x0] + lx * x[:, y0, x1]) + ly * (
                (1 - lx) * x[:, y1, x0] + lx * x[:, y1, x1]
            )
    return out


def np_reference(maps, pretrain_dim: int, target_dim: int) -> np.ndarray:
    maps = [np.asarray(m, np.float64) for m in maps]
    b, h, w = maps[0].shape[:3]
    pooled = []
    for m in maps:
        u = np_unfold(m)
        if u.shape[1:3] != (h, w):
            u = np_bilinear(u, (h, w))
        pooled.append(np_adaptive_pool1d(u, pretrain_dim))
    flat = np.stack(pooled, axis=-2).reshape(b, h, w, -1)
    return np_adaptive_pool1d(flat, target_dim).reshape(b, h * w, target_dim)


def test_numpy_reference_pieces_match_torch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 7, 4))
    tx = torch.from_numpy(x.transpose(0, 3, 1, 2))
    unf = torch.nn.Unfold(3, padding=1)(tx).numpy()  # [B, C*9, h*w]
    np.testing.assert_allclose(np_unfold(x).reshape(2, 35, 36).transpose(0, 2, 1), unf, atol=1e-12)
    for hw in [(10, 14), (3, 4), (9, 5)]:
        ref = F.interpolate(tx, size=hw, mode="bilinear", align_corners=False).numpy()
        np.testing.assert_allclose(np_bilinear(x, hw).transpose(0, 3, 1, 2), ref, atol=1e-12)
    v = rng.normal(size=(3, 4608 // 16))
    for out in (64, 37, 100):
        ref = F.adaptive_avg_pool1d(torch.from_numpy(v)[:, None], out)[:, 0].numpy()
        np.testing.assert_allclose(np_adaptive_pool1d(v, out), ref, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# jad vs the reference
# ---------------------------------------------------------------------------------------------
CASES = [
    # (channels, grids, pretrain, target, expected modes)
    ((16, 32), ((12, 12), (6, 6)), 32, 32, ("depthwise", "depthwise")),  # PatchCore-like (4.5, 9)
    ((16, 32), ((10, 12), (5, 6)), 48, 48, ("tiled", "tiled")),  # PBAS-like (3, 6)
    ((12, 20), ((8, 8), (4, 4)), 50, 37, ("general", "general")),  # non-uniform, mixes layers
    ((8, 12, 16), ((12, 10), (6, 5), (3, 3)), 20, 30, ("general",) * 3),  # 3 layers
    ((16, 8), ((4, 4), (8, 8)), 24, 24, None),  # second layer finer: downsampling resize
]


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
@pytest.mark.parametrize("method", ["auto", "general"])
def test_aggregation_matches_literal_reference(case, method):
    channels, grids, dp, dt, modes = case
    rng = np.random.default_rng(len(channels) * 100 + dp)
    maps = [
        rng.normal(size=(2, *g, c)).astype(np.float32) for c, g in zip(channels, grids, strict=True)
    ]
    if modes is not None:
        assert tuple(p.mode for p in plan_layers(channels, dp, dt)) == modes
    got = jax.jit(lambda *m: aggregate_patch_features(m, dp, dt, method=method))(*maps)
    ref = np_reference(maps, dp, dt)
    assert got.shape == ref.shape and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), ref, atol=2e-6, rtol=0)


def test_default_configs_use_closed_forms():
    assert [p.mode for p in plan_layers((512, 1024), 1024, 1024)] == ["depthwise", "depthwise"]
    pc = plan_layers((512, 1024), 1024, 1024)
    np.testing.assert_allclose(pc[0].kernel[0], [[0.1] * 3, [0.1, 0.2, 0.1], [0.1] * 3], atol=1e-15)
    np.testing.assert_allclose(pc[1].kernel, np.full((2, 3, 3), 1 / 18), atol=1e-15)
    assert [p.mode for p in plan_layers((512, 1024), 1536, 1536)] == ["tiled", "tiled"]
    assert [p.kernel.shape[0] for p in plan_layers((512, 1024), 1536, 1536)] == [6, 12]


@pytest.mark.parametrize("n_in,n_out", [(14, 28), (18, 36), (28, 224), (28, 14), (7, 3), (5, 12)])
def test_bilinear_matches_torch(n_in, n_out):
    x = np.random.default_rng(n_in).normal(size=(1, 2, n_in, n_in)).astype(np.float32)
    ref = F.interpolate(
        torch.from_numpy(x), size=(n_out, n_out), mode="bilinear", align_corners=False
    )
    got = resize_bilinear(jnp.asarray(x.transpose(0, 2, 3, 1)), (n_out, n_out))
    np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), ref.numpy(), atol=1e-6)
    np.testing.assert_allclose(bilinear_matrix(n_out, n_in).sum(1), 1.0, atol=1e-6)


def test_feature_grid():
    assert feature_grid((224, 224)) == (28, 28)
    assert feature_grid((288, 288)) == (36, 36)
    assert feature_grid((320, 256), ("layer3", "layer2")) == (20, 16)


@pytest.mark.slow  # compiles WRN50-2 twice
def test_make_feature_fn_matches_jit_and_caches():
    sd = random_state_dict("resnet50", seed=11)
    variables, _ = convert.torch_to_flax(sd, "resnet50")
    module = ARCHS["resnet50"]()
    x = np.random.default_rng(12).normal(size=(2, 64, 80, 3)).astype(np.float32)
    fn = make_feature_fn(module, "patchcore", pretrain_embed_dim=64, target_embed_dim=48)
    got = fn(variables, x)
    assert got.shape == (2, 8 * 10, 48)
    ref = jax.jit(
        lambda v, x: patchcore_features(module, v, x, pretrain_embed_dim=64, target_embed_dim=48)
    )(variables, x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=1e-5)
    fn(variables, x)
    assert len(fn._cache) == 1
    stages = make_feature_fn(module, "stages", stages=("layer1",))(variables, x)
    assert stages["layer1"].shape == (2, 16, 20, 256)
    with pytest.raises(ValueError, match="unknown kind"):
        make_feature_fn(module, "padim")
