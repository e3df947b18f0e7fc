"""PatchCore on MVTec AD (15 categories): WRN50-2 layer2+3, 256 -> 224, 10 % coreset, 1-NN.

Convert torchvision's IMAGENET1K_V1 weights once, then run:

    python -m jad.convert --src wide_resnet50_2-95faca4d.pth --out weights/wrn50_v1
    python -m jad.train --config=configs/patchcore_mvtec.py --workdir=runs/patchcore_mvtec \
        --config.data.root=/path/to/mvtec --config.backbone.weights=weights/wrn50_v1

Add `--config.backbone.replay_load_bn_update=True --config.data.mask_mode=bilinear_eq1` to
reproduce the official code's numerics exactly (its load-time BatchNorm update and mask path).
One category: `--config.data.categories=<name>`.
"""

from jad.config_base import patchcore


def get_config(arg=None):
    c = patchcore("mvtec")
    c.data.root = ""  # required: --config.data.root=/path/to/mvtec
    c.backbone.weights = ""  # required: a folder written by python -m jad.convert
    return c
