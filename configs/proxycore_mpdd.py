"""ProxyCore on MPDD (6 categories): spec defaults with T = 0.1, the temperature of the logged MPDD
run (spec §10).

    python -m jad.convert --src wide_resnet50_2-95faca4d.pth --out weights/wrn50_v1
    python -m jad.train --config=configs/proxycore_mpdd.py --workdir=runs/proxycore_mpdd \
        --config.data.root=/path/to/mpdd --config.backbone.weights=weights/wrn50_v1

Official variant and protocol: `--config.proxycore.variant=faithful --config.train.select=test_official
--config.train.eval_every=24` (test-selected, NOT a valid protocol). The logged ablation with raw
dot-product labels: `--config.proxycore.label_rule=dot`. jad's standard masks:
`--config.data.mask_mode=nearest`.
"""

from jad.config_base import proxycore


def get_config(arg=None):
    c = proxycore("mpdd")
    c.data.root = ""  # required: --config.data.root=/path/to/mpdd
    c.backbone.weights = ""  # required: a folder written by python -m jad.convert
    c.proxycore.temperature = 0.1  # logged MPDD run
    return c
