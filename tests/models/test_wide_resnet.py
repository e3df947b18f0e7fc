"""Flax ResNet vs the torch reference (third_party/torch_wrn50.py), stage by stage.

Tolerance (fp32, precision HIGHEST): max abs error <= 1e-4 x the stage's activation std (std of
the torch output). bf16: relative Frobenius error <= 5e-2 per stage.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jadtest import need
from model_helpers import random_state_dict, torch_reference

from jad.models import convert, load_backbone
from jad.models.wide_resnet import ARCHS, STAGES, init_variables, stage_hw

torch = need("torch")  # the torch reference: skips without torch, fails under CI

HIGHEST = jax.lax.Precision.HIGHEST
ALL = ("stem", "layer1", "layer2", "layer3", "layer4", "logits")


def _torch_stages(net, x_nhwc: np.ndarray, stages) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = net.forward_stages(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2)), stages)
    return {
        k: (v.numpy().transpose(0, 2, 3, 1) if v.ndim == 4 else v.numpy()) for k, v in out.items()
    }


def _image(h: int, w: int, seed: int = 1, batch: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, h, w, 3)).astype(np.float32)


def _check(out, ref, stages, rel=1e-4):
    for s in stages:
        o, r = np.asarray(out[s], np.float32), ref[s]
        assert o.shape == r.shape, (s, o.shape, r.shape)
        err, scale = float(np.abs(o - r).max()), float(r.std())
        assert err <= rel * scale, f"{s}: max abs err {err:.3g} > {rel} x std {scale:.3g}"


@pytest.fixture(scope="module")
def wrn(wrn_converted):
    """The converted .pth restored through load_backbone (the full converter path)."""
    return load_backbone(wrn_converted, precision=HIGHEST)


@pytest.mark.parametrize(
    "hw,stages",
    [
        ((224, 224), ALL),
        ((192, 256), ("stem", "layer2", "layer4")),  # non-square
    ],
)
def test_wrn50_matches_torch(wrn, wrn_torch, hw, stages):
    module, variables = wrn
    x = _image(*hw)
    out = jax.jit(lambda v, x: module.apply(v, x, stages=stages))(variables, x)
    assert set(out) == set(stages)
    _check(out, _torch_stages(wrn_torch, x, stages), stages)


@pytest.mark.slow
@pytest.mark.parametrize("size,stages", [(256, ("layer1", "layer3")), (288, ("layer2", "layer4"))])
def test_wrn50_matches_torch_more_sizes(wrn, wrn_torch, size, stages):
    module, variables = wrn
    x = _image(size, size, seed=size)
    out = jax.jit(lambda v, x: module.apply(v, x, stages=stages))(variables, x)
    _check(out, _torch_stages(wrn_torch, x, stages), stages)


def test_resnet50_matches_torch_small():
    sd = random_state_dict("resnet50", seed=3)
    net = torch_reference("resnet50", sd)
    variables, _ = convert.torch_to_flax(sd, "resnet50", keep_fc=True)
    module = ARCHS["resnet50"](precision=HIGHEST)
    x = _image(96, 128, seed=4, batch=2)
    out = jax.jit(lambda v, x: module.apply(v, x, stages=ALL))(variables, x)
    _check(out, _torch_stages(net, x, ALL), ALL)


def test_stops_after_deepest_stage():
    """Without layer3/layer4/fc variables the forward to layer2 still runs: nothing deeper is used."""
    sd = random_state_dict("resnet50", seed=5, fc=False)
    variables, _ = convert.torch_to_flax(sd, "resnet50")
    for col in ("params", "batch_stats"):
        variables[col] = {
            k: v for k, v in variables[col].items() if not k.startswith(("layer3", "layer4"))
        }
    out = ARCHS["resnet50"]().apply(variables, _image(64, 64), stages=("layer2", "stem"))
    assert sorted(out) == ["layer2", "stem"]
    assert out["layer2"].shape == (1, 8, 8, 512)
    with pytest.raises(ValueError, match="unknown stage"):
        ARCHS["resnet50"]().apply(variables, _image(64, 64), stages=("layer5",))


@pytest.mark.slow  # fast tier: the eval-mode torch parity stays
def test_bf16_close_to_fp32(wrn):
    module, variables = wrn
    bf16 = ARCHS["wide_resnet50_2"](dtype=jnp.bfloat16)
    x = _image(128, 128, seed=7)
    stages = ("layer2", "layer3")
    ref = jax.jit(lambda v, x: module.apply(v, x, stages=stages))(variables, x)
    out = jax.jit(lambda v, x: bf16.apply(v, x, stages=stages))(variables, x)
    for s in stages:
        assert out[s].dtype == jnp.bfloat16
        o, r = np.asarray(out[s], np.float32), np.asarray(ref[s])
        rel = np.linalg.norm(o - r) / np.linalg.norm(r)
        assert rel <= 5e-2, (s, rel)


@pytest.mark.slow  # fast tier: the eval-mode torch parity stays
def test_train_mode_bn_matches_torch_train():
    """Train mode: outputs use batch statistics; running_var moves with the UNBIASED variance."""
    sd = random_state_dict("resnet50", seed=8)
    net = torch_reference("resnet50", sd).train()
    variables, _ = convert.torch_to_flax(sd, "resnet50")
    module = ARCHS["resnet50"](precision=HIGHEST)
    x = _image(64, 96, seed=9, batch=2)
    out, upd = module.apply(variables, x, train=True, stages=("layer2",), mutable=["batch_stats"])
    ref = _torch_stages(net, x, ("layer2",))
    _check(out, ref, ("layer2",))
    new = convert.flax_to_torch({"params": variables["params"], **upd}, "resnet50")
    tsd = net.state_dict()
    for k in ("bn1.running_var", "layer1.0.bn2.running_var", "layer2.3.bn3.running_mean"):
        np.testing.assert_allclose(new[k], tsd[k].numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
    # BNs after layer2 were not run, so they keep their values
    np.testing.assert_array_equal(new["layer3.0.bn1.running_var"], sd["layer3.0.bn1.running_var"])


@pytest.mark.parametrize("hw", [(224, 224), (288, 288), (193, 250), (33, 31)])
def test_stage_hw_matches_shapes(hw):
    module = ARCHS["resnet50"]()
    shapes = jax.eval_shape(
        lambda x: module.init_with_output(jax.random.key(0), x, stages=STAGES[:-1])[0],
        jax.ShapeDtypeStruct((1, *hw, 3), jnp.float32),
    )
    for s in STAGES[:-1]:
        assert shapes[s].shape[1:3] == stage_hw(hw, s), s


def test_init_variables_tree_and_distributions():
    module = ARCHS["resnet50"]()
    v = init_variables(module, seed=0)
    ref = jax.eval_shape(
        lambda x: module.init(jax.random.key(0), x, stages=("logits",)),
        jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32),
    )
    assert jax.tree.structure(v) == jax.tree.structure(ref)
    assert all(
        a.shape == b.shape for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(ref), strict=True)
    )
    k = np.asarray(v["params"]["layer3_0"]["conv2"]["kernel"])  # He-normal fan_out = 3*3*256
    assert abs(k.std() - np.sqrt(2 / (9 * 256))) < 0.02 * np.sqrt(2 / (9 * 256))
    assert np.all(np.asarray(v["batch_stats"]["bn1"]["var"]) == 1.0)
    assert not np.array_equal(
        k, np.asarray(init_variables(module, seed=1)["params"]["layer3_0"]["conv2"]["kernel"])
    )


def test_resnet_tiny_keeps_the_stage_structure():
    """The tiny configs' backbone: every stage and shape rule of the ResNet-50 family (stage_hw),
    1/8 of the widths, one bottleneck per stage, random weights only."""
    from jad.models.pretrained import load_backbone
    from jad.models.wide_resnet import PREPOOL, stage_hw

    module, variables = load_backbone("random", "resnet_tiny")
    stages = (PREPOOL, "stem", "layer1", "layer2", "layer3", "layer4")
    out = module.apply(variables, _image(64, 48), stages=stages)
    channels = {PREPOOL: 8, "stem": 8, "layer1": 32, "layer2": 64, "layer3": 128, "layer4": 256}
    for s in stages:
        assert out[s].shape == (1, *stage_hw((64, 48), s), channels[s]), s
    assert {k for k in variables["params"] if k.startswith("layer")} == {
        f"layer{i}_0" for i in range(1, 5)
    }
