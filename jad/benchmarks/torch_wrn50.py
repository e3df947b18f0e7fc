"""Compact PyTorch ResNet-50 / Wide-ResNet-50-2 used as jad's parity reference.

Written for jad (not copied from torchvision). The module tree reproduces torchvision's parameter
and buffer names exactly (``conv1.weight``, ``bn1.running_mean``, ``layer1.0.downsample.1.running_var``,
``fc.bias``, ...), so a torchvision / timm ``state_dict`` loads with ``strict=True``. Plain torch only.

    net = TorchResNet(width_per_group=128)          # WRN-50-2; 64 -> ResNet-50
    net.load_state_dict(state_dict, strict=True)
    outs = net.eval().forward_stages(x_nchw, ("layer2", "layer3"))
"""

from __future__ import annotations

import torch
from torch import nn

STAGES = ("stem", "layer1", "layer2", "layer3", "layer4", "logits")


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)


class _Block(nn.Module):
    def __init__(self, cin: int, planes: int, width: int, stride: int, down: bool):
        super().__init__()
        cout = planes * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = _bn(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = _bn(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = _bn(cout)
        self.relu = nn.ReLU(inplace=False)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), _bn(cout))
            if down
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(y + skip)


class TorchResNet(nn.Module):
    """Bottleneck ResNet [3, 4, 6, 3] with torchvision names; ``width_per_group`` 64 or 128."""

    def __init__(self, width_per_group: int = 128, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = _bn(64)
        self.relu = nn.ReLU(inplace=False)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = 64
        for i, (n, planes) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True)):
            width = planes * width_per_group // 64
            blocks = []
            for b in range(n):
                stride = 2 if (i > 0 and b == 0) else 1
                blocks.append(_Block(cin, planes, width, stride, down=b == 0))
                cin = planes * 4
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():  # same distributions as torchvision's init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_stages(self, x: torch.Tensor, stages=("layer2", "layer3")) -> dict:
        """x [B, 3, H, W] -> {stage: tensor}; stops after the deepest requested stage.

        ``"stem"`` is the max-pool output (input of layer1), ``"logits"`` the fc output.
        """
        deepest = max(STAGES.index(s) for s in stages)
        out = {}
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        if "stem" in stages:
            out["stem"] = x
        for i in range(4):
            if deepest <= i:
                return out
            x = getattr(self, f"layer{i + 1}")(x)
            if f"layer{i + 1}" in stages:
                out[f"layer{i + 1}"] = x
        if deepest == 5:
            out["logits"] = self.fc(torch.flatten(self.avgpool(x), 1))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x, ("logits",))["logits"]


def wide_resnet50_2(**kw) -> TorchResNet:
    return TorchResNet(width_per_group=128, **kw)


def resnet50(**kw) -> TorchResNet:
    return TorchResNet(width_per_group=64, **kw)
