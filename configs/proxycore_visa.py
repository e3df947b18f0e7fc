"""ProxyCore on VisA (12 categories, split_csv/1cls.csv): spec defaults with T = 0.1, the only
temperature logged on VisA (spec §10). Images keep their aspect ratio: shorter side 256, centre crop
224 (the sides are lost, as in the official code; masks are cropped identically).

    python -m jad.convert --src wide_resnet50_2-95faca4d.pth --out weights/wrn50_v1
    python -m jad.train --config=configs/proxycore_visa.py --workdir=runs/proxycore_visa \
        --config.data.root=/path/to/visa --config.backbone.weights=weights/wrn50_v1

Large categories have up to ~71k proxies (pcb1 at 10 %); above `proxycore.proxy_shard_gb` the proxy
matrix and its AdamP moments are split over the devices. Official variant and protocol:
`--config.proxycore.variant=faithful --config.train.select=test_official --config.train.eval_every=24`
(test-selected, NOT a valid protocol). jad's standard masks: `--config.data.mask_mode=nearest`.
"""

from jad.config_base import proxycore


def get_config(arg=None):
    c = proxycore("visa")
    c.data.root = ""  # required: --config.data.root=/path/to/visa
    c.backbone.weights = ""  # required: a folder written by python -m jad.convert
    c.proxycore.temperature = 0.1  # logged VisA runs
    return c
