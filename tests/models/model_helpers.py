"""Helpers shared by the backbone tests (random torchvision-layout weights, torch reference)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def random_state_dict(arch: str, seed: int = 0, *, fc: bool = True) -> dict[str, np.ndarray]:
    """torchvision-layout random weights whose activations stay O(1) through all stages.

    conv He-normal fan_out; BN gamma U(0.5, 1.5) (x0.35 for every bn3, which keeps the residual
    stream from growing), beta / running_mean N(0, 0.1), running_var U(0.5, 1.5); fc N(0, 0.01).
    """
    from jad.models.convert import torch_layout

    rng = np.random.default_rng(seed)
    sd: dict[str, np.ndarray] = {}
    for key, (shape, kind) in torch_layout(arch, fc=fc).items():
        if kind == "conv":
            v = rng.standard_normal(shape, dtype=np.float32)
            v *= np.float32(np.sqrt(2.0 / (shape[0] * shape[2] * shape[3])))
        elif kind == "bn_weight":
            v = rng.uniform(0.5, 1.5, shape) * (0.35 if key.endswith("bn3.weight") else 1.0)
        elif kind in ("bn_bias", "bn_mean"):
            v = rng.normal(0.0, 0.1, shape)
        elif kind == "bn_var":
            v = rng.uniform(0.5, 1.5, shape)
        elif kind == "bn_count":
            sd[key] = np.zeros((), np.int64)
            continue
        elif kind == "fc_weight":
            v = rng.normal(0.0, 0.01, shape)
        else:
            v = np.zeros(shape)
        sd[key] = np.asarray(v, np.float32)
    return sd


def torch_reference(arch: str, sd: dict[str, np.ndarray]):
    """third_party TorchResNet with ``sd`` loaded strictly, eval mode."""
    import torch

    from jad.benchmarks import torch_wrn50

    net = torch_wrn50.TorchResNet(width_per_group={"wide_resnet50_2": 128, "resnet50": 64}[arch])
    net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, strict=True)
    return net.eval()
