"""PyTorch transcription of the official PBAS training step, epoch and inference (benchmark peer).

Written for jad from the specification ``shared/specs/pbas.md`` (§2-§8, §12) and the golden
README's "Official behaviours a port must mimic"; not copied from the official repository. It
reproduces what the official code computes *and how it computes it* (literal unfold -> upsample of
all C*9 layer3 maps -> adaptive pools, one discriminator on ``cat([true, fake])``, torch
optimisers, scipy blur on the host), so ``python -m jad.benchmark pbas`` times jad against the
official cost. Checked against ``shared/golden/pbas.npz`` in ``tests/benchmarks/test_torch_pbas.py``.

    backbone = backbone_from_jad(variables)                 # or backbone_from_state_dict(sd)
    heads = TorchPBASHeads(); heads.load_from_jad(params, batch_stats)
    opt_p, opt_d = make_optimizers(heads)
    f = features(backbone, x)                               # x [B, 3, 288, 288] -> [B, 1296, 1536]
    losses = train_step(heads, opt_p, opt_d, f, centres)
    image_scores, maps = predict(backbone, heads, x)

Not reproduced (no effect on the timed numerics): the DataLoader (16 workers, PIL decoding), the
centre initialisation pass (§5), the AUROC computation and PNG writing after every test pass, and
the checkpointing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F
from torch import nn

DIM = 1536  # pretrain_embed_dimension = target_embed_dimension = projector width
HIDDEN = 1024  # dsc_hidden
K = 0.25  # anomaly degree k of the code and run scripts (paper: 0.3)
MAP_SIZE = 288
SIGMA = 4.0


# ---------------------------------------------------------------------------------------------
# Heads and optimisers (spec §4)
# ---------------------------------------------------------------------------------------------
class TorchPBASHeads(nn.Module):
    """Projector ``Linear(1536, 1536)`` and discriminator
    ``Linear(1536, 1024) -> BatchNorm1d(1024) -> LeakyReLU(0.2) -> Linear(1024, 1, no bias) ->
    Sigmoid``: [N, 1536] -> [N, 1536] and [N, 1536] -> [N, 1] (probabilities).

    Initialised with torch defaults; call :meth:`load_from_jad` to copy jad's heads in.
    """

    def __init__(self, dim: int = DIM, hidden: int = HIDDEN):
        super().__init__()
        self.projector = nn.Linear(dim, dim)
        self.discriminator = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.BatchNorm1d(hidden, eps=1e-5, momentum=0.1),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1, bias=False),
            nn.Sigmoid(),
        )

    @torch.no_grad()
    def load_from_jad(self, params: Mapping[str, Any], batch_stats: Mapping[str, Any]) -> None:
        """Copy jad's Flax heads (``jad.methods.pbas`` layout; kernels [in, out]) into this module.

        Accepts jax or numpy arrays. BatchNorm's ``num_batches_tracked`` is reset to 0 (unused
        with momentum 0.1).
        """

        def t(x) -> torch.Tensor:
            return torch.from_numpy(np.array(x, dtype=np.float32))

        p, d = params["projector"]["fc"]["dense"], params["discriminator"]
        fc1, bn, tail = self.discriminator[0], self.discriminator[1], self.discriminator[3]
        stats = batch_stats["discriminator"]["bn"]
        pairs = (
            (self.projector.weight, t(p["kernel"]).T),
            (self.projector.bias, t(p["bias"])),
            (fc1.weight, t(d["fc1"]["dense"]["kernel"]).T),
            (fc1.bias, t(d["fc1"]["dense"]["bias"])),
            (bn.weight, t(d["bn"]["scale"])),
            (bn.bias, t(d["bn"]["bias"])),
            (bn.running_mean, t(stats["mean"])),
            (bn.running_var, t(stats["var"])),
            (tail.weight, t(d["tail"]["dense"]["kernel"]).T),
        )
        for dst, src in pairs:
            if dst.shape != src.shape:
                raise ValueError(
                    f"shape mismatch: torch {tuple(dst.shape)} vs jad {tuple(src.shape)}"
                )
            dst.copy_(src)
        bn.num_batches_tracked.zero_()


def make_optimizers(heads: TorchPBASHeads) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """(projector ``Adam(lr 1e-4, weight_decay 1e-5)`` [coupled L2], discriminator
    ``AdamW(lr 2e-4)`` [torch default decoupled weight_decay 0.01]); betas / eps torch defaults."""
    opt_p = torch.optim.Adam(heads.projector.parameters(), lr=1e-4, weight_decay=1e-5)
    opt_d = torch.optim.AdamW(heads.discriminator.parameters(), lr=2e-4)
    return opt_p, opt_d


# ---------------------------------------------------------------------------------------------
# Training step (spec §6, golden behaviours 6-8)
# ---------------------------------------------------------------------------------------------
def train_step(
    heads: TorchPBASHeads,
    opt_p: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    features: torch.Tensor,
    centres: torch.Tensor,
    k: float = K,
) -> dict[str, float]:
    """One official ``_train_discriminator`` inner step.

    features: [B, HW, D] float32 backbone patch features (HW = 1296, D = 1536 at 288 px);
    centres: [HW, D] sample centres (frozen). Returns the logged quantities as floats: ``total`` =
    ``svdd`` + ``bce_true`` + ``bce_fake``; ``p_true`` / ``p_fake`` = fraction of true scores
    < 0.5 / fake scores >= 0.5; ``r_fake`` = mean ||fake - centre||.
    """
    heads.projector.train()
    heads.discriminator.train()
    opt_p.zero_grad()
    opt_d.zero_grad()
    true = heads.projector(features.reshape(-1, features.shape[-1]))  # [N, D]
    with torch.no_grad():
        sim = F.normalize(true, dim=1) @ F.normalize(centres, dim=1).T  # [N, HW]
        assign = sim.argmax(dim=1)
    c = centres[assign]  # [N, D]
    dist = torch.norm(true - c, dim=1)  # [N]
    r = dist.mean()  # svdd loss; gradient reaches the projector
    # Official: no epsilon in the division (a patch equal to its centre gives NaN).
    fake = true + ((true - c) / dist.unsqueeze(1) * r * k).detach()
    scores = heads.discriminator(torch.cat([true, fake]))  # [2N, 1]; BN stats over all 2N rows
    n = true.shape[0]
    true_scores, fake_scores = scores[:n], scores[n:]
    bce = nn.BCELoss()
    bce_true = bce(true_scores, torch.zeros_like(true_scores))
    bce_fake = bce(fake_scores, torch.ones_like(fake_scores))
    loss = r + bce_true + bce_fake
    loss.backward()
    opt_p.step()
    opt_d.step()
    with torch.no_grad():  # the official step's logged diagnostics
        p_true = (true_scores < 0.5).float().mean()
        p_fake = (fake_scores >= 0.5).float().mean()
        r_fake = torch.norm(fake - c, dim=1).mean()
    return {
        "total": loss.item(),
        "svdd": r.item(),
        "bce_true": bce_true.item(),
        "bce_fake": bce_fake.item(),
        "p_true": p_true.item(),
        "p_fake": p_fake.item(),
        "r_fake": r_fake.item(),
    }


# ---------------------------------------------------------------------------------------------
# Backbone and patch features (spec §3, golden behaviour 2)
# ---------------------------------------------------------------------------------------------
def _torch_wrn50():
    from jad.benchmarks import torch_wrn50

    return torch_wrn50


def backbone_from_state_dict(
    state_dict: Mapping[str, Any], *, channels_last: bool = False
) -> nn.Module:
    """third_party ``TorchResNet(width_per_group=128)`` (WRN50-2) with torchvision-named weights
    (numpy arrays; ``fc.*`` optional), eval mode, gradients off."""
    net = _torch_wrn50().TorchResNet(width_per_group=128)
    sd = {k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}
    if "fc.weight" not in sd:  # headless weights: keep the random fc (only run_layer4 uses it)
        sd.update({k: v for k, v in net.state_dict().items() if k.startswith("fc.")})
    net.load_state_dict(sd, strict=True)
    net.eval().requires_grad_(False)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


def backbone_from_jad(variables: Mapping[str, Any], *, channels_last: bool = False) -> nn.Module:
    """The same as :func:`backbone_from_state_dict` from jad's Flax WRN50-2 variables."""
    from jad.models.convert import flax_to_torch

    return backbone_from_state_dict(
        flax_to_torch(variables, "wide_resnet50_2"), channels_last=channels_last
    )


def _patchify(fmap: torch.Tensor) -> torch.Tensor:
    """PatchMaker (patchsize 3, stride 1): [B, C, h, w] -> [B, h*w, C, 3, 3], zero padding,
    channel-major (c, ky, kx) vectors."""
    b, c, h, w = fmap.shape
    u = F.unfold(fmap, kernel_size=3, stride=1, padding=1, dilation=1)  # [B, C*9, h*w]
    return u.reshape(b, c, 3, 3, h * w).permute(0, 4, 1, 2, 3)


def _upsample_patches(p: torch.Tensor, src: tuple[int, int], dst: tuple[int, int]) -> torch.Tensor:
    """[B, hs*ws, C, 3, 3] -> [B, hd*wd, C, 3, 3]: each of the C*9 components as an hs x ws map,
    bilinear (align_corners=False) to hd x wd, as the official ``_embed`` does for layer3."""
    b, _, c = p.shape[:3]
    p = p.reshape(b, *src, c, 3, 3).permute(0, 3, 4, 5, 1, 2)  # [B, C, 3, 3, hs, ws]
    p = p.reshape(-1, 1, *src)
    p = F.interpolate(p, size=dst, mode="bilinear", align_corners=False)
    p = p.reshape(b, c, 3, 3, *dst).permute(0, 4, 5, 1, 2, 3)  # [B, hd, wd, C, 3, 3]
    return p.reshape(b, dst[0] * dst[1], c, 3, 3)


def _patch_features(layer2: torch.Tensor, layer3: torch.Tensor, dim: int = DIM) -> torch.Tensor:
    """layer2 [B, 512, h, w], layer3 [B, 1024, h/2, w/2] -> [B, h*w, dim].

    Preprocessing (MeanMapper per layer: ``adaptive_avg_pool1d`` of each C*9 vector to ``dim``),
    stack [N, 2, dim] (layer2 first), Aggregator (flatten, ``adaptive_avg_pool1d`` to ``dim``).
    """
    b, _, h, w = layer2.shape
    p2 = _patchify(layer2)
    p3 = _upsample_patches(_patchify(layer3), tuple(layer3.shape[-2:]), (h, w))
    pooled = []
    for p in (p2, p3):
        p = p.reshape(-1, *p.shape[-3:])  # [N, C, 3, 3]
        pooled.append(F.adaptive_avg_pool1d(p.reshape(len(p), 1, -1), dim).squeeze(1))
    f = torch.stack(pooled, dim=1)  # [N, 2, dim]
    f = F.adaptive_avg_pool1d(f.reshape(len(f), 1, -1), dim).reshape(len(f), -1)
    return f.reshape(b, h * w, dim)


@torch.no_grad()
def features(
    backbone: nn.Module,
    images: torch.Tensor,
    *,
    channels_last: bool = False,
    run_layer4: bool = False,
) -> torch.Tensor:
    """Frozen WRN50-2 -> official PBAS patch features: images [B, 3, H, W] float32 (ImageNet-
    normalised NCHW) -> [B, (H/8)*(W/8), 1536] ([B, 1296, 1536] at 288 px).

    The official hook-based extractor never stops the forward pass, so it also computes layer4,
    avgpool and fc, whose outputs are discarded. ``run_layer4=False`` (default) stops after
    layer3 (same features, like jad); ``run_layer4=True`` runs and therefore times the full
    official forward. ``channels_last`` converts the input (pass a backbone built with
    ``channels_last=True`` too).
    """
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    stages = ("layer2", "layer3", "logits") if run_layer4 else ("layer2", "layer3")
    out = backbone.forward_stages(images, stages)
    return _patch_features(out["layer2"], out["layer3"])


# ---------------------------------------------------------------------------------------------
# Inference (spec §8)
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def patch_scores(heads: TorchPBASHeads, feats: torch.Tensor) -> torch.Tensor:
    """[B, HW, D] features -> [B, HW] discriminator probabilities (eval mode, BN running stats)."""
    heads.eval()
    b, hw, d = feats.shape
    return heads.discriminator(heads.projector(feats.reshape(-1, d))).reshape(b, hw)


@torch.no_grad()
def predict_from_features(
    heads: TorchPBASHeads, feats: torch.Tensor, map_size: int = MAP_SIZE, sigma: float = SIGMA
) -> tuple[np.ndarray, np.ndarray]:
    """[B, HW, D] features (square grid) -> (image scores [B], maps [B, map_size, map_size]).

    Image score = max of the raw patch scores. Map (official RescaleSegmentor): bilinear
    (align_corners=False) from the grid to ``map_size``, then ``scipy.ndimage.gaussian_filter``
    (sigma 4, scipy defaults) per image on the host, float32.
    """
    s = patch_scores(heads, feats)  # [B, HW]
    image_scores = s.max(dim=1).values.numpy()
    side = int(round(s.shape[1] ** 0.5))
    up = F.interpolate(
        s.reshape(-1, 1, side, side),
        size=(map_size, map_size),
        mode="bilinear",
        align_corners=False,
    ).squeeze(1)
    maps = np.stack([scipy.ndimage.gaussian_filter(m, sigma=sigma) for m in up.numpy()])
    return image_scores, maps


@torch.no_grad()
def predict(
    backbone: nn.Module,
    heads: TorchPBASHeads,
    images: torch.Tensor,
    *,
    channels_last: bool = False,
    run_layer4: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Official ``_predict``: images [B, 3, 288, 288] -> (image scores [B], maps [B, 288, 288])."""
    f = features(backbone, images, channels_last=channels_last, run_layer4=run_layer4)
    return predict_from_features(heads, f, map_size=images.shape[-1])


# ---------------------------------------------------------------------------------------------
# One official epoch (spec §7: train pass, then the full test set is scored)
# ---------------------------------------------------------------------------------------------
def _batches(images: torch.Tensor | Iterable[torch.Tensor], batch_size: int):
    if isinstance(images, torch.Tensor):
        return list(torch.split(images, batch_size))
    return list(images)


def official_epoch(
    backbone: nn.Module,
    heads: TorchPBASHeads,
    opt_p: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    centres: torch.Tensor,
    train_images: torch.Tensor | Iterable[torch.Tensor],
    test_images: torch.Tensor | Iterable[torch.Tensor],
    *,
    batch_size: int = 8,
    k: float = K,
    channels_last: bool = False,
    run_layer4: bool = False,
) -> dict[str, Any]:
    """One official training epoch plus its after-epoch test pass, timed.

    train_images / test_images: [N, 3, 288, 288] float32 (split into batches of ``batch_size``,
    last one smaller, in the given order: shuffle beforehand for the official RandomSampler) or
    an iterable of such batches. centres: [1296, 1536].

    Returns seconds ``features_s`` (train backbone + patch features), ``steps_s``
    (:func:`train_step`), ``test_features_s``, ``test_scoring_s`` (heads, upsample, blur),
    ``test_s`` (their sum), ``total_s``; ``losses`` (one dict per step), ``image_scores`` [N_test],
    ``maps`` [N_test, 288, 288]. Metrics and PNG writing after the test pass are not included.
    """
    t_feat = t_step = t_test_feat = t_test_score = 0.0
    losses, scores, maps = [], [], []
    for x in _batches(train_images, batch_size):
        t0 = time.perf_counter()
        f = features(backbone, x, channels_last=channels_last, run_layer4=run_layer4)
        t1 = time.perf_counter()
        losses.append(train_step(heads, opt_p, opt_d, f, centres, k=k))
        t2 = time.perf_counter()
        t_feat += t1 - t0
        t_step += t2 - t1
    for x in _batches(test_images, batch_size):
        t0 = time.perf_counter()
        f = features(backbone, x, channels_last=channels_last, run_layer4=run_layer4)
        t1 = time.perf_counter()
        s, m = predict_from_features(heads, f, map_size=x.shape[-1])
        t2 = time.perf_counter()
        scores.append(s)
        maps.append(m)
        t_test_feat += t1 - t0
        t_test_score += t2 - t1
    return {
        "features_s": t_feat,
        "steps_s": t_step,
        "test_features_s": t_test_feat,
        "test_scoring_s": t_test_score,
        "test_s": t_test_feat + t_test_score,
        "total_s": t_feat + t_step + t_test_feat + t_test_score,
        "losses": losses,
        "image_scores": np.concatenate(scores) if scores else np.zeros(0, np.float32),
        "maps": np.concatenate(maps) if maps else np.zeros((0, 0, 0), np.float32),
    }
