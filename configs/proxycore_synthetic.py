"""ProxyCore demo on jad's generated synthetic set (hard mode) with a RANDOM-init WRN50-2.

A few minutes on 2 CPU cores (no downloads):

    python -m jad.train --config=configs/proxycore_synthetic.py --workdir=runs/proxycore_synthetic

Demo-sized: 128 px (16 x 16 patches per image, 32 training images = 8,192 patches per category,
K = 819 proxies at 10 %) and 6 epochs (96 steps) instead of 200; the method, its dimensions
(1024 -> 4096 -> 1024 MLPs), loss and optimiser are ProxyCore's. With random backbone weights the
features carry little meaning: what the demo shows is that the proxy loss falls (TensorBoard:
`tensorboard --logdir runs/proxycore_synthetic`), not a published score. The official defects:
`--config.proxycore.variant=faithful`; the side-by-side comparison with PatchCore on the same
backbone and test set: `python -m jad.benchmark proxycore --compare`.
"""

from jad.config_base import proxycore, variant


def get_config(arg=None):
    """``arg``: none = the demo above; "tiny" = the test size (``config_base.tiny``)."""
    return variant(proxycore("synthetic"), arg, demo)


def demo(c):
    c.backbone.weights = "random"
    c.data.synthetic_mode = "hard"
    c.data.resize = 128
    c.data.crop = 128
    c.data.batch_size = 16
    c.train.epochs = 6
    c.train.eval_every = 3
    c.eval.num_heatmaps = 8
    return c
