"""PBAS on MPDD (6 categories) with the official code's settings (its MVTec loader, so the same
288 px preprocessing and per-category rule), k = 0.25, 640 epochs, last epoch reported.

    python -m jad.convert --src wide_resnet50_2-95faca4d.pth --out weights/wrn50_v1
    python -m jad.train --config=configs/pbas_mpdd.py --workdir=runs/pbas_mpdd \
        --config.data.root=/path/to/mpdd --config.backbone.weights=weights/wrn50_v1

Official (test-selected, not a valid protocol): `--config.train.select=test_official`.
"""

from jad.config_base import pbas


def get_config(arg=None):
    c = pbas("mpdd")
    c.data.root = ""  # required: --config.data.root=/path/to/mpdd
    c.backbone.weights = ""  # required: a folder written by python -m jad.convert
    c.data.category_resize = "toothbrush:329,wood:329"  # the MVTec loader's rule (no-op on MPDD)
    return c
