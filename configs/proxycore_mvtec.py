"""ProxyCore on MVTec AD (15 categories), spec defaults (shared/specs/proxycore.md §12): 256 -> 224 px,
pseudo-labels and memory bank from 10 % coresets, T = 0.05, focal loss, feature noise std 1.0,
AdamP lr 1e-5 / wd 1e-2, 200 epochs of 512-patch batches, last epoch reported (variant ``fixed``).

Convert backbone weights once, then run:

    python -m jad.convert --src wide_resnet50_2-95faca4d.pth --out weights/wrn50_v1
    python -m jad.train --config=configs/proxycore_mvtec.py --workdir=runs/proxycore_mvtec \
        --config.data.root=/path/to/mvtec_anomaly_detection --config.backbone.weights=weights/wrn50_v1

The official code (what produced its logged numbers, spec §10-§11): `--config.proxycore.variant=faithful`
(permuted pseudo-labels, random proxies, focal of the batch-mean CE), timm 0.6.5's RACM weights
(`wide_resnet50_racm-8234f177.pth`, converted with `python -m jad.convert` into a folder you pass as
`--config.backbone.weights`) and its test-selected protocol (best test image AUROC at every 24th
epoch, NOT a valid protocol; labelled so in results.json):
`--config.train.select=test_official --config.train.eval_every=24`.
Masks are the official `bilinear_gt0`; jad's standard rule: `--config.data.mask_mode=nearest`.
One category: `--config.data.categories=bottle` (K = 16,385 proxies). Resume: run it again.
"""

from jad.config_base import proxycore


def get_config(arg=None):
    c = proxycore("mvtec")
    c.data.root = ""  # required: --config.data.root=/path/to/mvtec_anomaly_detection
    c.backbone.weights = ""  # required: a folder written by python -m jad.convert
    return c
