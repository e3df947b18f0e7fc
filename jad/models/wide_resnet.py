"""ResNet-50 / Wide-ResNet-50-2 in Flax Linen with torchvision's V1 structure and parameter layout.

Structure (torchvision ``ResNet`` with ``Bottleneck`` blocks [3, 4, 6, 3], "v1.5"):

- stem: conv 7x7 / 2, pad 3 -> BN -> ReLU -> max-pool 3x3 / 2, pad 1 (padding value -inf);
- ``layerK_i`` bottleneck: conv1 1x1 -> BN -> ReLU -> conv2 3x3 (stride on conv2, pad 1) -> BN ->
  ReLU -> conv3 1x1 -> BN, plus the identity or (block 0) ``downsample_0`` conv1x1/stride +
  ``downsample_1`` BN; add; ReLU;
- head: global average pool -> ``fc``.

Padding is explicit (torch semantics), never ``'SAME'``. Activations are NHWC, kernels HWIO.
Parameter tree (``variables["params"]`` / ``variables["batch_stats"]``) mirrors torchvision's names
with dots inside a block index replaced by ``_``: ``conv1``, ``bn1``, ``layer1_0/conv1``,
``layer1_0/downsample_0``, ``layer1_0/downsample_1``, ..., ``fc``, so weight conversion is a table
(``jad.models.convert``).

BatchNorm matches ``torch.nn.BatchNorm2d`` (eps 1e-5, momentum 0.1 == Flax momentum 0.9): eval mode
normalises with the running statistics; train mode normalises with the biased batch variance and
updates ``running_var`` with the UNBIASED batch variance (n / (n - 1)), as torch does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

STAGES = ("stem", "layer1", "layer2", "layer3", "layer4", "logits")
#: conv1 -> bn1 -> relu before the max-pool ([B, H/2, W/2, 64]): the U-Net decoder's first skip.
PREPOOL = "stem_prepool"
BLOCKS = (3, 4, 6, 3)
PLANES = (64, 128, 256, 512)
EXPANSION = 4

# torchvision's init: kaiming_normal_(mode="fan_out", nonlinearity="relu"), untruncated.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# torch Linear default: U(+-1/sqrt(fan_in)) for weight and bias.
fc_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


class BatchNorm2d(nn.Module):
    """torch-semantics BatchNorm over the channel (last) axis of NHWC activations.

    Params ``scale`` / ``bias`` [C] float32; batch_stats ``mean`` / ``var`` [C] float32.
    Statistics are computed in float32 whatever ``dtype`` is; the output has ``dtype``.
    """

    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        if train:
            xf = x.astype(jnp.float32)
            axes = tuple(range(x.ndim - 1))
            n = 1
            for a in axes:
                n *= x.shape[a]
            if n < 2:
                raise ValueError(
                    f"BatchNorm in train mode needs more than 1 value per channel, got input "
                    f"shape {x.shape}; use a larger batch/image or train=False."
                )
            mean = jnp.mean(xf, axis=axes)
            var = jnp.mean(jnp.square(xf - mean), axis=axes)  # biased, used to normalise
            if not self.is_initializing() and self.is_mutable_collection("batch_stats"):
                m = self.momentum
                ra_mean.value = m * ra_mean.value + (1.0 - m) * mean
                ra_var.value = m * ra_var.value + (1.0 - m) * var * (n / (n - 1))
        else:
            mean, var = ra_mean.value, ra_var.value
        mul = scale * jax.lax.rsqrt(var + self.epsilon)
        add = bias - mean * mul
        return (x * mul.astype(self.dtype) + add.astype(self.dtype)).astype(self.dtype)


def _conv(features: int, k: int, stride: int, pad: int, name: str, mod: nn.Module) -> nn.Conv:
    return nn.Conv(
        features,
        (k, k),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        dtype=mod.dtype,
        param_dtype=jnp.float32,
        precision=mod.precision,
        kernel_init=conv_init,
        name=name,
    )


class Bottleneck(nn.Module):
    """torchvision Bottleneck (expansion 4, stride on the 3x3 conv). [B,H,W,Cin] -> [B,H/s,W/s,4*planes]."""

    planes: int
    width: int
    stride: int = 1
    downsample: bool = False
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        bn = lambda name: BatchNorm2d(dtype=self.dtype, name=name)
        y = _conv(self.width, 1, 1, 0, "conv1", self)(x)
        y = nn.relu(bn("bn1")(y, train))
        y = _conv(self.width, 3, self.stride, 1, "conv2", self)(y)
        y = nn.relu(bn("bn2")(y, train))
        y = _conv(self.planes * EXPANSION, 1, 1, 0, "conv3", self)(y)
        y = bn("bn3")(y, train)
        if self.downsample:
            x = _conv(self.planes * EXPANSION, 1, self.stride, 0, "downsample_0", self)(x)
            x = bn("downsample_1")(x, train)
        return nn.relu(y + x.astype(y.dtype))


class ResNet(nn.Module):
    """torchvision-layout ResNet-50 family (``width_per_group`` 64: ResNet-50, 128: WRN-50-2).

    Attributes:
      width_per_group: bottleneck width factor (64 or 128).
      num_classes: size of ``fc`` (only created when ``"logits"`` is requested).
      dtype: computation dtype (float32 or bfloat16); params and BN statistics stay float32.
      precision: ``jax.lax.Precision`` passed to every conv (tests use ``HIGHEST``).
      blocks, planes: the stage depths and widths (torchvision's by default; ``resnet_tiny``
        shrinks both).
    """

    width_per_group: int = 128
    num_classes: int = 1000
    blocks: tuple[int, ...] = BLOCKS  # bottlenecks per stage (torchvision's [3, 4, 6, 3])
    planes: tuple[int, ...] = PLANES  # stage planes; the stem has planes[0] channels
    dtype: Any = jnp.float32
    precision: Any = None
    remat: bool = False  # recompute each bottleneck's activations in the backward pass

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        *,
        train: bool = False,
        stages: Sequence[str] = ("layer2", "layer3"),
    ) -> dict[str, jax.Array]:
        """Runs the network up to the deepest requested stage.

        Args:
          x: [B, H, W, 3] normalised images (any float dtype; cast to ``dtype``).
          train: BN uses batch statistics (and updates ``batch_stats`` when it is mutable).
          stages: any of ``"stem_prepool"`` (conv1 + bn + relu before the max-pool,
            [B, H/2, W/2, 64]), ``"stem"`` (after the max-pool, [B, H/4, W/4, 64]), ``"layer1"``
            (256 * w ch, /4), ``"layer2"`` (512 * w, /8), ``"layer3"`` (1024 * w, /16),
            ``"layer4"`` (2048 * w, /32) with w = 1, ``"logits"`` ([B, num_classes], float32).

        Returns:
          dict stage -> activation (``dtype``; logits float32). Nothing after the deepest
          requested stage is computed.
        """
        stages = (stages,) if isinstance(stages, str) else tuple(stages)
        unknown = [s for s in stages if s not in STAGES and s != PREPOOL]
        if unknown or not stages:
            raise ValueError(
                f"unknown stage(s) {unknown or stages}; choose from {(PREPOOL, *STAGES)}."
            )
        deepest = max(STAGES.index("stem" if s == PREPOOL else s) for s in stages)
        out: dict[str, jax.Array] = {}

        x = x.astype(self.dtype)
        x = _conv(self.planes[0], 7, 2, 3, "conv1", self)(x)
        x = nn.relu(BatchNorm2d(dtype=self.dtype, name="bn1")(x, train))
        if PREPOOL in stages:
            out[PREPOOL] = x
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))  # pads with -inf
        if "stem" in stages:
            out["stem"] = x
        if deepest == 0:
            return out
        block = nn.remat(Bottleneck, static_argnums=(2,)) if self.remat else Bottleneck
        for li, (nblocks, planes) in enumerate(zip(self.blocks, self.planes, strict=True)):
            width = planes * self.width_per_group // 64
            for b in range(nblocks):
                x = block(
                    planes=planes,
                    width=width,
                    stride=(2 if li > 0 else 1) if b == 0 else 1,
                    downsample=b == 0,
                    dtype=self.dtype,
                    precision=self.precision,
                    name=f"layer{li + 1}_{b}",
                )(x, train)
            name = f"layer{li + 1}"
            if name in stages:
                out[name] = x
            if deepest == li + 1:
                return out
        pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        bound = 1.0 / float(pooled.shape[-1]) ** 0.5  # torch Linear default init
        out["logits"] = nn.Dense(
            self.num_classes,
            dtype=jnp.float32,
            precision=self.precision,
            kernel_init=fc_kernel_init,
            bias_init=lambda k, s, d=jnp.float32: jax.random.uniform(k, s, d, -bound, bound),
            name="fc",
        )(pooled)
        return out


def init_variables(module: ResNet, seed: int = 0, *, with_fc: bool = True) -> dict[str, Any]:
    """Random variables with torchvision's init distributions, without tracing the network.

    Same distributions as ``module.init`` (He-normal fan_out convs; BN scale 1, bias 0, running
    mean 0, var 1; fc weight and bias U(+-1/sqrt(2048))), but ``module.init`` costs ~20 s of XLA
    compile time for this network on CPU; here one standard-normal and one uniform draw of the
    total size (``jax.random.key(seed)``) are cut into the leaves in sorted tree order (a few s).
    """
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    stages = ("logits",) if with_fc else ("layer4",)
    shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x, stages=stages), x)
    flat, tree = jax.tree_util.tree_flatten_with_path(shapes)
    names = [[getattr(p, "key", str(p)) for p in path] for path, _ in flat]
    is_conv = [
        n[-1] == "kernel" and len(s.shape) == 4 for n, (_, s) in zip(names, flat, strict=True)
    ]
    is_fc = [n[-2] == "fc" for n in names]
    n_conv = sum(s.size for c, (_, s) in zip(is_conv, flat, strict=True) if c)
    n_fc = sum(s.size for f, (_, s) in zip(is_fc, flat, strict=True) if f)
    k_conv, k_fc = jax.random.split(jax.random.key(seed))
    z = np.asarray(jax.jit(jax.random.normal, static_argnums=1)(k_conv, (n_conv,)))
    u = np.asarray(jax.jit(jax.random.uniform, static_argnums=1)(k_fc, (max(n_fc, 1),)))
    leaves, oz, ou = [], 0, 0
    for conv, fc, (_, s) in zip(is_conv, is_fc, flat, strict=True):
        if conv:  # HWIO: fan_out = kh * kw * O
            std = np.sqrt(2.0 / (s.shape[0] * s.shape[1] * s.shape[3]))
            leaves.append(z[oz : oz + s.size].reshape(s.shape) * np.float32(std))
            oz += s.size
        elif fc:
            bound = 1.0 / np.sqrt(shapes["params"]["fc"]["kernel"].shape[0])
            leaves.append((u[ou : ou + s.size].reshape(s.shape) * 2 - 1) * np.float32(bound))
            ou += s.size
        elif names[len(leaves)][-1] in ("scale", "var"):
            leaves.append(np.ones(s.shape, np.float32))
        else:
            leaves.append(np.zeros(s.shape, np.float32))
    return jax.tree.unflatten(tree, [jnp.asarray(v, jnp.float32) for v in leaves])


def wide_resnet50_2(**kw: Any) -> ResNet:
    """Wide-ResNet-50-2 (torchvision ``wide_resnet50_2``: 68.9M params, width_per_group 128)."""
    return ResNet(width_per_group=128, **kw)


def resnet50(**kw: Any) -> ResNet:
    """ResNet-50 (torchvision ``resnet50``: 25.6M params, width_per_group 64)."""
    return ResNet(width_per_group=64, **kw)


def resnet_tiny(**kw: Any) -> ResNet:
    """A ResNet of the same structure, one bottleneck per stage and 1/8 of the widths (stem 8,
    layer1..4: 32, 64, 128, 256 channels; 0.13M parameters without ``fc``). No torchvision
    counterpart and no converter: random weights only. For tests and smoke runs of the pipeline
    (every stage, name and shape rule of the ResNet-50 family, at a small fraction of its compile
    and run time), never for anomaly detection."""
    return ResNet(width_per_group=64, blocks=(1, 1, 1, 1), planes=(8, 16, 32, 64), **kw)


ARCHS = {"wide_resnet50_2": wide_resnet50_2, "resnet50": resnet50, "resnet_tiny": resnet_tiny}


def stage_hw(image_hw: tuple[int, int], stage: str) -> tuple[int, int]:
    """Spatial size of a stage's output for an input of ``image_hw`` (torch conv arithmetic)."""
    if stage != PREPOOL and stage not in STAGES[:-1]:
        raise ValueError(
            f"stage {stage!r} has no spatial grid; choose from {(PREPOOL, *STAGES[:-1])}."
        )
    if stage == PREPOOL:
        n_halvings = 1
    else:
        n_halvings = 2 + max(0, STAGES.index(stage) - 1)  # stem conv + pool, then layer2..4

    def f(n: int) -> int:
        for _ in range(n_halvings):  # k=3,p=1,s=2 / k=7,p=3,s=2: floor((n - 1) / 2) + 1
            n = (n - 1) // 2 + 1
        return n

    return f(image_hw[0]), f(image_hw[1])
