"""APC demo on jad's generated synthetic set (hard mode), RANDOM-init ResNet-50, 10 labelled
anomalies per category. A few minutes on 2 CPU cores (no downloads):

    python -m jad.train --config=configs/apc_synthetic.py --workdir=runs/apc_synthetic

Demo-sized: 96 px, 100 fine-tuning steps of 4 normal + 4 anomalous images, a decoder at a quarter
of the spec's width. Compare with PatchCore on the identical reduced test set:

    python -m jad.train --config=configs/patchcore_synthetic.py --workdir=runs/pc_reduced \
        --config.data.synthetic_mode=hard --config.data.labelled_anomalies=10 \
        --config.data.resize=96 --config.data.crop=96 --config.backbone.arch=resnet50
"""

from jad.config_base import apc, variant


def get_config(arg=None):
    """``arg``: none = the demo above; "tiny" = the test size (``config_base.tiny``)."""
    return variant(apc("synthetic"), arg, demo)


def demo(c):
    c.backbone.weights = "random"
    c.backbone.arch = "resnet50"
    c.data.synthetic_mode = "hard"
    c.data.resize = 96
    c.data.crop = 96
    c.apc.decoder_width = 0.25
    c.apc.anomalous_batch = 4
    c.apc.warmup_steps = 10
    c.train.batch_size = 4
    c.train.steps = 100
    c.train.checkpoint_every = 25
    c.eval.num_heatmaps = 8
    return c
