"""PBAS on VisA (12 categories, split_csv/1cls.csv) with the official code's settings: shorter
side resized to 288 and centre-cropped to 288 (no per-category exception), masks resized
bilinearly and binarised with > 0 (the official VisA rule), k = 0.25, 640 epochs.

    python -m jad.convert --src wide_resnet50_2-95faca4d.pth --out weights/wrn50_v1
    python -m jad.train --config=configs/pbas_visa.py --workdir=runs/pbas_visa \
        --config.data.root=/path/to/visa --config.backbone.weights=weights/wrn50_v1

Official (test-selected, not a valid protocol): `--config.train.select=test_official`.
"""

from jad.config_base import pbas


def get_config(arg=None):
    c = pbas("visa")
    c.data.root = ""  # required: --config.data.root=/path/to/visa
    c.backbone.weights = ""  # required: a folder written by python -m jad.convert
    c.data.mask_mode = "bilinear_gt0"  # official VisA masks: bilinear resize, then > 0
    return c
