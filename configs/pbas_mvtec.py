"""PBAS on MVTec AD (15 categories), the official code's settings: 288 px (toothbrush and wood
resized to 329 then cropped to 288), k = 0.25, 640 epochs, batch 8, last epoch reported.

Convert torchvision's IMAGENET1K_V1 weights once, then run:

    python -m jad.convert --src wide_resnet50_2-95faca4d.pth --out weights/wrn50_v1
    python -m jad.train --config=configs/pbas_mvtec.py --workdir=runs/pbas_mvtec \
        --config.data.root=/path/to/mvtec_anomaly_detection --config.backbone.weights=weights/wrn50_v1

Paper values instead of the code's: `--config.pbas.k=0.3 --config.train.epochs=400
--config.data.resize=256 --config.data.crop=256 --config.data.category_resize=toothbrush:292,wood:292`.
The official protocol (best test I-AUROC + P-AUROC over all epochs, NOT a valid protocol; labelled so
in results.json): `--config.train.select=test_official`. Its exact numerics: add
`--config.backbone.replay_load_bn_update=True --config.data.mask_mode=bilinear_eq1`.
One category: `--config.data.categories=bottle`. Resume: run the same command again.
"""

from jad.config_base import pbas


def get_config(arg=None):
    c = pbas("mvtec")
    c.data.root = ""  # required: --config.data.root=/path/to/mvtec_anomaly_detection
    c.backbone.weights = ""  # required: a folder written by python -m jad.convert
    c.data.category_resize = "toothbrush:329,wood:329"  # int(288 * 8 / 7), official exception
    return c
