"""Flax ResNet-50 / Wide-ResNet-50-2 backbone, weight conversion and patch features.

- ``wide_resnet``: the Flax module (torchvision V1 layout), ``ARCHS``
- ``convert``: torchvision / timm weights -> Flax (``python -m jad.convert``)
- ``pretrained``: ``load_backbone`` / ``weights_info``
- ``features``: PatchCore / PBAS patch features, ``make_feature_fn``, ``replay_load_bn_update``
"""

from jad.models.pretrained import load_backbone, weights_info
from jad.models.wide_resnet import ARCHS, ResNet, resnet50, wide_resnet50_2

__all__ = ["ARCHS", "ResNet", "load_backbone", "resnet50", "weights_info", "wide_resnet50_2"]
