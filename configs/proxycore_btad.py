"""ProxyCore on BTAD (products 01, 02, 03), spec defaults (T = 0.05, as the logged BTAD run).

    python -m jad.convert --src wide_resnet50_2-95faca4d.pth --out weights/wrn50_v1
    python -m jad.train --config=configs/proxycore_btad.py --workdir=runs/proxycore_btad \
        --config.data.root=/path/to/btad --config.backbone.weights=weights/wrn50_v1

Official variant and protocol: `--config.proxycore.variant=faithful --config.train.select=test_official
--config.train.eval_every=24` (test-selected, NOT a valid protocol). jad's standard masks:
`--config.data.mask_mode=nearest`.
"""

from jad.config_base import proxycore


def get_config(arg=None):
    c = proxycore("btad")
    c.data.root = ""  # required: --config.data.root=/path/to/btad
    c.backbone.weights = ""  # required: a folder written by python -m jad.convert
    return c
