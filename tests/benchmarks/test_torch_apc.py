"""The torch APC benchmark peer (``jad.benchmarks.torch_apc``) computes what jad's APC step computes.

Tiny configuration: random ResNet-50 (jad's init), 64 px, decoder width 0.25, 2 normal + 2
anomalous images with random masks, no augmentation (``apc.augment=none``, ``apc.jitter=0``) and
no warm-up (jad's learning rates at step 0 equal torch's constant ones). jad's state comes from
``APC.init``; torch copies it with ``load_from_jad``. Forward outputs and the loss before / after one
optimiser step agree to ~1e-4 relative (float32 convolution rounding; measured ~1e-5). ~60 s on
two busy CPU cores (two XLA compiles of ResNet-50), hence ``slow`` (the kernel-layout check is not).
"""

from __future__ import annotations

import numpy as np
import pytest
from jadtest import need

torch = need("torch")

import jax  # noqa: E402

from jad.benchmarks import torch_apc as ta  # noqa: E402

B_NORMAL, B_ANOM, SIZE = 2, 2, 64
RTOL = 1e-4


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def test_convtranspose_kernel_correspondence():
    """Flax ``ConvTranspose`` (``transpose_kernel=False``) == torch ``ConvTranspose2d`` with the
    kernel flipped spatially and laid out [in, out, kh, kw] (what ``load_from_jad`` does)."""
    import flax.linen as fnn

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    m = fnn.ConvTranspose(4, (2, 2), strides=(2, 2), padding="VALID")
    v = m.init(jax.random.key(0), x)
    kernel = rng.standard_normal((2, 2, 6, 4)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    y = np.asarray(m.apply({"params": {"kernel": kernel, "bias": bias}}, x))
    assert v["params"]["kernel"].shape == kernel.shape
    t = torch.nn.ConvTranspose2d(6, 4, 2, stride=2)
    with torch.no_grad():
        t.weight.copy_(torch.from_numpy(kernel[::-1, ::-1].transpose(2, 3, 0, 1).copy()))
        t.bias.copy_(torch.from_numpy(bias))
        yt = t(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(yt, y, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def setup():
    """(jad trainer, its initial state, jad batch, torch model + optimiser, torch inputs)."""
    from jad.config_base import apc as apc_config
    from jad.methods import apc

    torch.set_num_threads(2)
    c = apc_config("synthetic")
    c.backbone.arch = "resnet50"
    c.backbone.weights = "random"
    c.data.resize = c.data.crop = SIZE
    c.apc.decoder_width = 0.25
    c.apc.anomalous_batch = B_ANOM
    c.apc.augment = "none"
    c.apc.jitter = 0.0
    c.apc.warmup_steps = 0
    c.apc.remat = False
    c.train.batch_size = B_NORMAL
    c.train.steps = 10**6  # cosine decay: the first two learning rates are the peaks to ~1e-12
    trainer = apc.APC(c)
    trainer.begin_category("disc")

    n = B_NORMAL + B_ANOM
    rng = np.random.default_rng(0)
    images = rng.standard_normal((n, SIZE, SIZE, 3)).astype(np.float32)
    masks = np.zeros((n, SIZE, SIZE), np.float32)
    masks[B_NORMAL:] = rng.random((B_ANOM, SIZE, SIZE)) < 0.2
    labels = np.array([0] * B_NORMAL + [1] * B_ANOM, np.int32)
    batch = {
        "image": images,
        "gt_mask": masks,
        "label": labels,
        "mask": np.ones(n, np.float32),
        "index": np.arange(n, dtype=np.int32),
    }
    # init's random decoder kernels compile ~3x faster with rbg than threefry (values irrelevant)
    with jax.default_prng_impl("rbg"):
        state = jax.jit(trainer.init)(jax.random.key(0), {"image": images[:1]})
    model = ta.TorchAPC("resnet50", width=0.25)
    model.load_from_jad(jax.device_get(state.params), jax.device_get(state.batch_stats))
    opt = ta.make_optimizer(
        model, lr_encoder=c.apc.lr_encoder, lr_head=c.apc.lr_head, weight_decay=c.apc.weight_decay
    )
    t_in = (
        torch.from_numpy(images.transpose(0, 3, 1, 2).copy()),
        torch.from_numpy(masks),
        torch.from_numpy(labels),
    )
    return trainer, state, batch, model, opt, t_in


@pytest.mark.slow
def test_load_from_jad_copies_every_tensor(setup):
    trainer, state, _, model, _, _ = setup
    sd = model.state_dict()
    dec = state.params["decoder"]
    np.testing.assert_array_equal(
        sd["decoder.up4.conv1.conv.weight"].numpy(),
        np.asarray(dec["up4"]["conv1"]["conv"]["kernel"]).transpose(3, 2, 0, 1),
    )
    np.testing.assert_array_equal(
        sd["decoder.cls.weight"].numpy(), np.asarray(dec["cls"]["dense"]["kernel"]).T
    )
    np.testing.assert_array_equal(
        sd["encoder.layer3.2.bn2.running_var"].numpy(),
        np.asarray(state.batch_stats["encoder"]["layer3_2"]["bn2"]["var"]),
    )
    n_jad = sum(x.size for x in jax.tree.leaves(state.params))
    n_torch = sum(p.numel() for p in model.parameters())
    assert n_jad == n_torch
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(
        n.startswith(("encoder.conv1", "encoder.bn1", "encoder.layer1.")) for n in frozen
    )
    assert not model.encoder.training and model.decoder.training


@pytest.mark.slow
def test_forward_outputs_match_jad(setup):
    from jad.methods.apc import ENCODER_STAGES

    trainer, state, batch, model, _, (x, _, _) = setup
    module, _ = trainer.backbone

    @jax.jit
    def forward(params, stats, images):
        stages = module.apply(
            {"params": params["encoder"], "batch_stats": stats["encoder"]},
            images,
            stages=ENCODER_STAGES,
        )
        out, _ = trainer.decoder.apply(
            {"params": params["decoder"], "batch_stats": stats["decoder"]},
            stages,
            train=True,
            mutable=["batch_stats"],
        )
        return out

    seg, recon, cls = jax.device_get(forward(state.params, state.batch_stats, batch["image"]))
    model.train()
    with torch.no_grad():
        seg_t, recon_t, cls_t = model(x)
    assert _rel(seg_t.numpy(), seg) < RTOL
    assert _rel(recon_t.numpy().transpose(0, 2, 3, 1), recon) < RTOL
    assert _rel(cls_t.numpy(), cls) < RTOL


@pytest.mark.slow
def test_loss_before_and_after_one_step_matches_jad(setup):
    trainer, state, batch, model, opt, (x, m, y) = setup
    frozen_before = model.encoder.layer1[0].conv1.weight.clone()
    trained_before = model.encoder.layer2[0].conv1.weight.clone()
    step = jax.jit(trainer.train_step)
    s1, m1 = step(state, batch)
    _, m2 = step(s1, batch)
    m1, m2 = jax.device_get((m1, m2))
    t1 = ta.train_step(model, opt, x, m, y)
    t2 = ta.train_step(model, opt, x, m, y)
    for jad_m, torch_m, when in ((m1, t1, "before"), (m2, t2, "after one step")):
        for key in ("loss", "cls", "segm", "dice", "recon"):
            np.testing.assert_allclose(
                torch_m[key], float(jad_m[key]), rtol=RTOL, err_msg=f"{key} {when}"
            )
    assert abs(m2["loss"] - m1["loss"]) > 100 * RTOL * abs(m1["loss"])  # the step did something
    assert torch.equal(model.encoder.layer1[0].conv1.weight, frozen_before)
    assert not torch.equal(model.encoder.layer2[0].conv1.weight, trained_before)
