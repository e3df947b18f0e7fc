"""Trainable heads on top of backbone features, with torch's initialisers and BatchNorm semantics.

- :class:`Linear`: ``torch.nn.Linear`` as a Flax ``Dense`` (kernel [in, out]); default init is
  torch's U(+-1/sqrt(fan_in)) for kernel and bias; :data:`xavier_normal` (untruncated, as
  ``torch.nn.init.xavier_normal_``) is available for the kernel.
- :class:`BatchNorm1d`: ``torch.nn.BatchNorm1d`` over the rows of [N, C]: train mode normalises
  with the biased variance of the *real* rows (``mask``), updates ``running_var`` with the
  unbiased one, momentum 0.1, eps 1e-5; statistics are summed over a pmapped ``axis_name`` so a
  pmap step computes the global-batch statistics of a jit step.
- PBAS (spec ``pbas.md`` §4): :class:`PBASProjector` (Linear 1536 -> 1536) and
  :class:`PBASDiscriminator` (Linear 1536 -> 1024 -> BatchNorm1d -> LeakyReLU(0.2) -> Linear
  1024 -> 1 without bias; returns the logit, the official sigmoid is applied by the caller).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jad.ops.reduce import count, masked_sum

#: ``torch.nn.init.xavier_normal_``: N(0, sqrt(2 / (fan_in + fan_out))), untruncated.
xavier_normal = nn.initializers.variance_scaling(1.0, "fan_avg", "normal")
#: torch's default Linear weight init, U(+-1/sqrt(fan_in)) (kaiming_uniform with a = sqrt(5)).
torch_linear_kernel = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_linear_bias(fan_in: int):
    """torch's default Linear bias init: U(+-1/sqrt(fan_in))."""
    bound = 1.0 / float(fan_in) ** 0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class Linear(nn.Module):
    """``torch.nn.Linear(in, features, bias)``: [..., in] -> [..., features] (float32)."""

    features: int
    use_bias: bool = True
    kernel_init: Any = torch_linear_kernel
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(
            self.features,
            use_bias=self.use_bias,
            kernel_init=self.kernel_init,
            bias_init=torch_linear_bias(x.shape[-1]),
            precision=self.precision,
            name="dense",
        )(x)


class BatchNorm1d(nn.Module):
    """torch ``BatchNorm1d`` over [N, C] with a row mask and an optional pmapped axis.

    Params ``scale`` / ``bias`` [C]; ``batch_stats`` ``mean`` / ``var`` [C] (float32).
    """

    momentum: float = 0.9  # torch momentum 0.1
    epsilon: float = 1e-5

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        *,
        train: bool,
        mask: jax.Array | None = None,
        axis_name: str | None = None,
    ) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        if train:
            n = count(mask, x.shape[0], axis_name)
            mean = masked_sum(x, mask, axis_name) / n
            var = masked_sum(jnp.square(x - mean), mask, axis_name) / n  # biased: normalise
            if not self.is_initializing() and self.is_mutable_collection("batch_stats"):
                m = self.momentum
                unbiased = var * n / jnp.maximum(n - 1.0, 1.0)
                ra_mean.value = m * ra_mean.value + (1.0 - m) * lax.stop_gradient(mean)
                ra_var.value = m * ra_var.value + (1.0 - m) * lax.stop_gradient(unbiased)
        else:
            mean, var = ra_mean.value, ra_var.value
        return (x - mean) * lax.rsqrt(var + self.epsilon) * scale + bias


class PBASProjector(nn.Module):
    """PBAS ``Projection(in, out, n_layers=1)``: one Linear with xavier-normal weight."""

    dim: int = 1536
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return Linear(self.dim, kernel_init=xavier_normal, precision=self.precision, name="fc")(x)


class PBASDiscriminator(nn.Module):
    """PBAS ``Discriminator(in, n_layers=2, hidden)``: [N, in] -> logits [N].

    One discriminator is applied to the concatenated [normal; synthetic] rows, so its BatchNorm
    statistics cover both halves (the paper's "pair of discriminators sharing weights").
    """

    hidden: int = 1024
    precision: Any = None

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        *,
        train: bool,
        mask: jax.Array | None = None,
        axis_name: str | None = None,
    ) -> jax.Array:
        h = Linear(self.hidden, kernel_init=xavier_normal, precision=self.precision, name="fc1")(x)
        h = BatchNorm1d(name="bn")(h, train=train, mask=mask, axis_name=axis_name)
        h = nn.leaky_relu(h, 0.2)
        out = Linear(
            1, use_bias=False, kernel_init=xavier_normal, precision=self.precision, name="tail"
        )(h)
        return out[..., 0]


# ---------------------------------------------------------------------------------------------
# APC: U-Net-style decoder over the backbone stages + segmentation / reconstruction / class heads
# ---------------------------------------------------------------------------------------------

#: He-normal, fan_out (torchvision's conv init) for the decoder's convolutions.
he_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class ConvBNReLU(nn.Module):
    """Conv 3x3 (torch padding 1, no bias) -> BatchNorm (train: batch statistics) -> ReLU."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, axis_name: str | None = None) -> jax.Array:
        x = nn.Conv(
            self.features,
            (3, 3),
            padding=((1, 1), (1, 1)),
            use_bias=False,
            kernel_init=he_normal_fan_out,
            name="conv",
        )(x)
        x = nn.BatchNorm(
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            axis_name=axis_name,
            name="bn",
        )(x)
        return nn.relu(x)


class UpBlock(nn.Module):
    """ConvTranspose 2x2 / 2 (``up`` channels) -> concat skip -> 2 x ConvBNReLU(``features``)."""

    up: int
    features: int

    @nn.compact
    def __call__(self, x, skip=None, *, train: bool, axis_name: str | None = None):
        x = nn.ConvTranspose(
            self.up,
            (2, 2),
            strides=(2, 2),
            padding="VALID",
            kernel_init=he_normal_fan_out,
            name="up",
        )(x)
        if skip is not None:
            x = jnp.concatenate([x, skip.astype(x.dtype)], axis=-1)
        x = ConvBNReLU(self.features, name="conv1")(x, train=train, axis_name=axis_name)
        return ConvBNReLU(self.features, name="conv2")(x, train=train, axis_name=axis_name)


class APCDecoder(nn.Module):
    """The APC fine-tuning heads (spec ``apc.md`` §3; jad's proposed wiring, no public code).

    Input: backbone stages ``stem_prepool`` [B, H/2, W/2, 64], ``layer1`` .. ``layer4``.
    Output: segmentation logits [B, H, W], reconstruction [B, H, W, 3] (ImageNet-normalised RGB),
    classification logit [B]. ``width`` scales the decoder's channels (1.0 = the spec's
    1024/512, 256, 128, 64, 32).
    """

    width: float = 1.0

    @nn.compact
    def __call__(self, stages: dict, *, train: bool, axis_name: str | None = None):
        c = lambda n: max(8, int(round(n * self.width)))
        kw = dict(train=train, axis_name=axis_name)
        x = UpBlock(c(1024), c(512), name="up4")(stages["layer4"], stages["layer3"], **kw)
        x = UpBlock(c(256), c(256), name="up3")(x, stages["layer2"], **kw)
        x = UpBlock(c(128), c(128), name="up2")(x, stages["layer1"], **kw)
        x = UpBlock(c(64), c(64), name="up1")(x, stages["stem_prepool"], **kw)
        x = UpBlock(c(32), c(32), name="up0")(x, None, **kw)
        seg = nn.Conv(1, (1, 1), kernel_init=he_normal_fan_out, name="seg")(x)[..., 0]
        recon = nn.Conv(3, (1, 1), kernel_init=he_normal_fan_out, name="recon")(x)
        pooled = jnp.mean(stages["layer4"].astype(jnp.float32), axis=(1, 2))
        cls = Linear(1, name="cls")(pooled)[..., 0]
        return seg, recon, cls


# ---------------------------------------------------------------------------------------------
# ProxyCore: the embedding / projection MLP (spec ``proxycore.md`` §5)
# ---------------------------------------------------------------------------------------------


class ProxyMLP(nn.Module):
    """ProxyCore ``MLP(in, hidden, out)``: [N, in] -> [N, out] float32.

    Linear(in, hidden) -> BatchNorm1d(hidden) -> ReLU -> Linear(hidden, out); no dropout, no final
    norm or activation; torch-default initialisers (``Linear``) and BatchNorm semantics
    (``BatchNorm1d``: row ``mask``, pmapped ``axis_name``, eps 1e-5, momentum 0.1). ProxyCore uses
    it twice (embedding 1024 -> 4096 -> 1024, projection 1024 -> 4096 -> 1024); its trainable
    proxy matrix is a plain parameter of the method (``jad.methods.proxycore``).
    """

    hidden: int = 4096
    out: int = 1024
    precision: Any = None

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        *,
        train: bool,
        mask: jax.Array | None = None,
        axis_name: str | None = None,
    ) -> jax.Array:
        h = Linear(self.hidden, precision=self.precision, name="fc1")(x)
        h = BatchNorm1d(name="bn")(h, train=train, mask=mask, axis_name=axis_name)
        h = nn.relu(h)
        return Linear(self.out, precision=self.precision, name="fc2")(h)
