"""AnomalousPatchCore on MVTec AD (15 categories) with 10 labelled anomalies per category.

The spec's proposed defaults (shared/specs/apc.md; the paper has no public code): WRN50-2 (or
`--config.backbone.arch=resnet50`), layer2..layer4 fine-tuned with encoder BatchNorm frozen, the
U-Net decoder with classification / segmentation / reconstruction heads, L = 10 L_cls + L_segm +
L_recon, 2 000 steps of 8 normal + 8 augmented anomalous images, AdamW 1e-5 / 1e-4 with warm-up
and cosine decay, then PatchCore (10 % coreset, 1-NN) on the tuned encoder. The 10 anomalies per
category are moved out of the test set (manifest in the workdir); run PatchCore with
`--config.data.labelled_anomalies=10` on the same split for the baseline.

    python -m jad.convert --src wide_resnet50_2-95faca4d.pth --out weights/wrn50_v1
    python -m jad.train --config=configs/apc_mvtec.py --workdir=runs/apc_mvtec \
        --config.data.root=/path/to/mvtec_anomaly_detection --config.backbone.weights=weights/wrn50_v1

The paper's starting point: MoCo v3 ResNet-50 (convert `r-50-1000ep.pth.tar` with
`python -m jad.convert --arch resnet50`), `--config.backbone.arch=resnet50`. Other split seeds:
`--config.data.split_seed=1`.
"""

from jad.config_base import apc


def get_config(arg=None):
    c = apc("mvtec")
    c.data.root = ""  # required: --config.data.root=/path/to/mvtec_anomaly_detection
    c.backbone.weights = ""  # required: a folder written by python -m jad.convert
    return c
