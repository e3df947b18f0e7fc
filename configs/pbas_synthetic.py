"""PBAS demo on jad's generated synthetic set (hard mode) with a RANDOM-init WRN50-2.

About 3 minutes on 2 CPU cores (no downloads):

    python -m jad.train --config=configs/pbas_synthetic.py --workdir=runs/pbas_synthetic

Demo-sized (128 px, 60 epochs); the method, its dimensions and optimisers are PBAS's. With random
backbone weights the features carry little meaning: what the demo shows is that PBAS learns (the
loss falls, the discriminator separates normal from synthetic features: p_true / p_fake rise, the
distance to the centres shrinks), not a published score. Logs: `tensorboard --logdir runs/pbas_synthetic`.
"""

from jad.config_base import pbas, variant


def get_config(arg=None):
    """``arg``: none = the demo above; "tiny" = the test size (``config_base.tiny``)."""
    return variant(pbas("synthetic"), arg, demo)


def demo(c):
    c.backbone.weights = "random"
    c.data.synthetic_mode = "hard"
    c.data.resize = 128
    c.data.crop = 128
    c.train.epochs = 60
    c.train.eval_every = 20
    c.eval.num_heatmaps = 8
    return c
