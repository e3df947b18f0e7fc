"""PyTorch transcription of jad's AnomalousPatchCore fine-tuning network and step (benchmark peer).

There is no official APC code (``shared/specs/apc.md``), so the peer is a transcription of *jad's*
choices (``jad.methods.apc``, ``jad.models.heads.APCDecoder``): the same computation as
``APC.train_step`` without the augmentation, written the way a PyTorch user would write it, so
``python -m jad.benchmark apc`` compares like with like. Checked against jad (forward outputs and
the loss before / after one step from identical weights) in ``tests/benchmarks/test_torch_apc.py``.

    model = TorchAPC("wide_resnet50_2", width=1.0)
    model.load_from_jad(state.params, state.batch_stats)  # jad's APC TrainState -> identical weights
    opt = make_optimizer(model)
    logs = train_step(model, opt, images, masks, labels)  # NCHW images, [B, H, W] masks, [B] labels

Network (spec §3, jad's wiring):

- encoder: third_party ``TorchResNet`` (torchvision names). Its BatchNorm always runs in eval mode
  (running statistics frozen; the affine parameters of trainable stages still train); the stem
  (``conv1``, ``bn1``) and ``layer1`` are frozen (``requires_grad=False``: autograd records nothing
  before ``layer2``, like jad's ``stop_gradient``), ``layer2`` .. ``layer4`` train;
- decoder: five up-blocks ``ConvTranspose2d(2x2, stride 2)`` -> concat skip (``layer3``,
  ``layer2``, ``layer1``, the stem before the max-pool, none) -> 2 x [Conv3x3 pad 1 no bias ->
  BatchNorm2d (train mode: batch statistics) -> ReLU]; channels ``c(n) = max(8, round(n * width))``
  of 1024/512, 256, 128, 64, 32 as jad's ``APCDecoder``;
- heads: segmentation ``Conv2d(c(32), 1, 1)`` logits, reconstruction ``Conv2d(c(32), 3, 1)``,
  classification ``Linear(2048, 1)`` on the global-average-pooled ``layer4``.

Loss (jad's ``APC.losses``, every row real): ``10 * BCEWithLogits(cls)`` + per-pixel focal BCE
(gamma 2, mean over all pixels of the batch) + soft Dice ``1 - (2 sum(p m) + 1) / (sum p + sum m +
1)`` over the anomalous images (0 without any) + MSE of the reconstruction on the normal images.
Optimiser: ``AdamW`` (betas 0.9 / 0.999, eps 1e-8, weight decay 1e-4 on every trainable tensor as
optax's ``adamw``), two parameter groups (encoder lr 1e-5, decoder and heads 1e-4), gradients
clipped at global norm 1.0 with ``torch.nn.utils.clip_grad_norm_``. Learning rates are constant
here; jad's warm-up + cosine schedule equals them at its step 0 when ``apc.warmup_steps=0``.

Differences from jad that do not change a step's loss or gradients: torch's decoder BatchNorm
updates ``running_var`` with the unbiased batch variance (Flax ``nn.BatchNorm``: biased); only eval
mode reads it. ``clip_grad_norm_`` divides by ``norm + 1e-6`` (optax: ``norm``), a 1e-6 relative
difference when clipping is active.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ARCH_WIDTH = {"wide_resnet50_2": 128, "resnet50": 64}
FROZEN_ENCODER = ("conv1", "bn1", "layer1")  # apc.train_from = "layer2"
ENCODER_CHANNELS = {
    "stem_prepool": 64,
    "layer1": 256,
    "layer2": 512,
    "layer3": 1024,
    "layer4": 2048,
}


def _torch_resnet_module():
    from jad.benchmarks import torch_wrn50

    return torch_wrn50


def decoder_channels(n: int, width: float) -> int:
    """jad's ``APCDecoder`` channel rule (Python's ``round``)."""
    return max(8, int(round(n * width)))


# ---------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------
class ConvBNReLU(nn.Sequential):
    """Conv 3x3 (padding 1, no bias) -> BatchNorm2d (eps 1e-5, momentum 0.1) -> ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
        self.relu = nn.ReLU(inplace=True)


class UpBlock(nn.Module):
    """ConvTranspose2d 2x2 / 2 (``up`` channels) -> concat skip -> 2 x ConvBNReLU(``features``)."""

    def __init__(self, cin: int, up: int, skip: int, features: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, up, 2, stride=2)
        self.conv1 = ConvBNReLU(up + skip, features)
        self.conv2 = ConvBNReLU(features, features)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = self.up(x)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class APCDecoder(nn.Module):
    """jad's ``APCDecoder`` in torch: stages (NCHW) -> (seg [B, H, W], recon [B, 3, H, W], cls [B])."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        c = lambda n: decoder_channels(n, width)
        e = ENCODER_CHANNELS
        self.up4 = UpBlock(e["layer4"], c(1024), e["layer3"], c(512))
        self.up3 = UpBlock(c(512), c(256), e["layer2"], c(256))
        self.up2 = UpBlock(c(256), c(128), e["layer1"], c(128))
        self.up1 = UpBlock(c(128), c(64), e["stem_prepool"], c(64))
        self.up0 = UpBlock(c(64), c(32), 0, c(32))
        self.seg = nn.Conv2d(c(32), 1, 1)
        self.recon = nn.Conv2d(c(32), 3, 1)
        self.cls = nn.Linear(e["layer4"], 1)

    def forward(self, stages: Mapping[str, torch.Tensor]):
        x = self.up4(stages["layer4"], stages["layer3"])
        x = self.up3(x, stages["layer2"])
        x = self.up2(x, stages["layer1"])
        x = self.up1(x, stages["stem_prepool"])
        x = self.up0(x)
        seg = self.seg(x)[:, 0]
        recon = self.recon(x)
        cls = self.cls(stages["layer4"].mean(dim=(2, 3)))[:, 0]
        return seg, recon, cls


class TorchAPC(nn.Module):
    """Encoder (``TorchResNet``) + :class:`APCDecoder`; ``forward(x NCHW) -> (seg, recon, cls)``.

    ``train()`` keeps the encoder's BatchNorm in eval mode (frozen running statistics); the stem
    and ``layer1`` have ``requires_grad=False``. ``channels_last`` converts the parameters (pass
    NCHW inputs; they are converted in :meth:`forward`).
    """

    def __init__(
        self, arch: str = "wide_resnet50_2", width: float = 1.0, *, channels_last: bool = False
    ):
        super().__init__()
        if arch not in ARCH_WIDTH:
            raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(ARCH_WIDTH)}")
        self.arch = arch
        self.channels_last = channels_last
        self.encoder = _torch_resnet_module().TorchResNet(width_per_group=ARCH_WIDTH[arch])
        del self.encoder.fc, self.encoder.avgpool  # APC's classifier is the decoder's ``cls``
        self.decoder = APCDecoder(width)
        for name in FROZEN_ENCODER:
            getattr(self.encoder, name).requires_grad_(False)
        if channels_last:
            self.to(memory_format=torch.channels_last)
        self.train()

    def train(self, mode: bool = True) -> TorchAPC:
        super().train(mode)
        self.encoder.eval()  # encoder BatchNorm: running statistics, always
        return self

    def stages(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        e = self.encoder
        out = {}
        x = e.relu(e.bn1(e.conv1(x)))
        out["stem_prepool"] = x
        x = e.maxpool(x)
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(e, name)(x)
            out[name] = x
        return out

    def forward(self, x: torch.Tensor):
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.decoder(self.stages(x))

    @torch.no_grad()
    def load_from_jad(self, params: Mapping[str, Any], batch_stats: Mapping[str, Any]) -> None:
        """Copy jad's APC train state (``state.params`` / ``state.batch_stats``: ``encoder`` =
        backbone without ``fc``, ``decoder`` = ``APCDecoder``) into this module.

        Encoder through ``jad.models.convert.flax_to_torch``; decoder by name: conv kernels HWIO
        -> OIHW; ``ConvTranspose`` kernels [kh, kw, in, out] -> ``ConvTranspose2d`` weight
        [in, out, kh, kw] *flipped spatially* (Flax's ``ConvTranspose`` with
        ``transpose_kernel=False`` correlates the stride-dilated input with the kernel as stored,
        torch's is the gradient of a convolution, i.e. uses the kernel rotated by 180 degrees);
        ``Dense`` [in, out] -> ``Linear`` [out, in]; BatchNorm ``scale`` / ``bias`` / ``mean`` /
        ``var`` -> ``weight`` / ``bias`` / ``running_mean`` / ``running_var``. Accepts jax or
        numpy arrays; ``num_batches_tracked`` is reset to 0 (unused with momentum 0.1).
        """
        from jad.models.convert import flax_to_torch

        enc = flax_to_torch(
            {"params": params["encoder"], "batch_stats": batch_stats["encoder"]}, self.arch
        )
        enc = {k: torch.from_numpy(np.array(v)) for k, v in enc.items() if not k.startswith("fc.")}
        self.encoder.load_state_dict(enc, strict=True)

        a = lambda x: np.asarray(x, dtype=np.float32)
        dp, ds = params["decoder"], batch_stats["decoder"]
        sd: dict[str, np.ndarray] = {}
        for blk in ("up4", "up3", "up2", "up1", "up0"):
            k = a(dp[blk]["up"]["kernel"])
            sd[f"{blk}.up.weight"] = k[::-1, ::-1].transpose(2, 3, 0, 1)
            sd[f"{blk}.up.bias"] = a(dp[blk]["up"]["bias"])
            for conv in ("conv1", "conv2"):
                p, s = dp[blk][conv], ds[blk][conv]["bn"]
                sd[f"{blk}.{conv}.conv.weight"] = a(p["conv"]["kernel"]).transpose(3, 2, 0, 1)
                sd[f"{blk}.{conv}.bn.weight"] = a(p["bn"]["scale"])
                sd[f"{blk}.{conv}.bn.bias"] = a(p["bn"]["bias"])
                sd[f"{blk}.{conv}.bn.running_mean"] = a(s["mean"])
                sd[f"{blk}.{conv}.bn.running_var"] = a(s["var"])
                sd[f"{blk}.{conv}.bn.num_batches_tracked"] = np.zeros((), np.int64)
        for head in ("seg", "recon"):
            sd[f"{head}.weight"] = a(dp[head]["kernel"]).transpose(3, 2, 0, 1)
            sd[f"{head}.bias"] = a(dp[head]["bias"])
        sd["cls.weight"] = a(dp["cls"]["dense"]["kernel"]).T
        sd["cls.bias"] = a(dp["cls"]["dense"]["bias"])
        ours = self.decoder.state_dict()
        if set(ours) != set(sd):
            raise ValueError(
                f"decoder keys differ: missing {sorted(set(ours) - set(sd))}, "
                f"unexpected {sorted(set(sd) - set(ours))}"
            )
        for k, v in sd.items():
            if tuple(ours[k].shape) != v.shape:
                raise ValueError(f"{k}: torch {tuple(ours[k].shape)} vs jad {v.shape}")
        self.decoder.load_state_dict(
            {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, strict=True
        )
        if self.channels_last:
            self.to(memory_format=torch.channels_last)


# ---------------------------------------------------------------------------------------------
# Loss, optimiser, step
# ---------------------------------------------------------------------------------------------
def losses(
    seg: torch.Tensor,
    recon: torch.Tensor,
    cls: torch.Tensor,
    images: torch.Tensor,
    masks: torch.Tensor,
    labels: torch.Tensor,
    *,
    weights: tuple[float, float, float] = (10.0, 1.0, 1.0),
    gamma: float = 2.0,
    recon_on: str = "normal",
) -> dict[str, torch.Tensor]:
    """jad's ``APC.losses`` (all rows real): seg [B, H, W] logits, recon [B, 3, H, W], cls [B]
    logits, images [B, 3, H, W], masks [B, H, W] in {0, 1}, labels [B] (0 normal / 1 anomalous).

    Returns ``loss`` (differentiable) and its parts ``cls``, ``segm`` (focal + Dice), ``dice``,
    ``recon``.
    """
    y = labels.to(torch.float32)
    m = masks.to(torch.float32)
    l_cls = F.binary_cross_entropy_with_logits(cls, y)
    log_p, log_q = F.logsigmoid(seg), F.logsigmoid(-seg)
    log_pt = m * log_p + (1 - m) * log_q
    l_focal = (-((1 - log_pt.exp()) ** gamma) * log_pt).mean()
    w = y[:, None, None]
    p = torch.sigmoid(seg) * w
    mw = m * w
    inter, sp, sm = (p * mw).sum(), p.sum(), mw.sum()
    dice = 1.0 - (2.0 * inter + 1.0) / (sp + sm + 1.0)
    l_dice = torch.where(sm > 0, dice, torch.zeros_like(dice))
    per_image = (recon - images).square().mean(dim=(1, 2, 3))
    rw = (1.0 - y) if recon_on == "normal" else torch.ones_like(y)
    l_recon = (per_image * rw).sum() / rw.sum()
    w_cls, w_segm, w_recon = weights
    loss = w_cls * l_cls + w_segm * (l_focal + l_dice) + w_recon * l_recon
    return {"loss": loss, "cls": l_cls, "segm": l_focal + l_dice, "dice": l_dice, "recon": l_recon}


def make_optimizer(
    model: TorchAPC,
    *,
    lr_encoder: float = 1e-5,
    lr_head: float = 1e-4,
    weight_decay: float = 1e-4,
    foreach: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW with two groups: trainable encoder tensors (``lr_encoder``), decoder + heads
    (``lr_head``); frozen stages are not in the optimiser."""
    enc = [p for p in model.encoder.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        [
            {"params": enc, "lr": lr_encoder},
            {"params": list(model.decoder.parameters()), "lr": lr_head},
        ],
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=weight_decay,
        foreach=foreach,
    )


def train_step(
    model: TorchAPC,
    opt: torch.optim.Optimizer,
    images: torch.Tensor,
    masks: torch.Tensor,
    labels: torch.Tensor,
    *,
    clip_norm: float = 1.0,
    **loss_kw: Any,
) -> dict[str, float]:
    """One step (no augmentation): forward, :func:`losses`, backward, ``clip_grad_norm_``,
    AdamW. Returns the losses *before* the update (as jad's step metrics) and ``grad_norm``."""
    model.train()
    opt.zero_grad(set_to_none=True)
    seg, recon, cls = model(images)
    out = losses(seg, recon, cls, images, masks, labels, **loss_kw)
    out["loss"].backward()
    params = [p for g in opt.param_groups for p in g["params"]]
    norm = torch.nn.utils.clip_grad_norm_(params, clip_norm)
    opt.step()
    logs = {k: float(v.detach()) for k, v in out.items()}
    logs["grad_norm"] = float(norm)
    return logs
