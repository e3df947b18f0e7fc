"""PatchCore on jad's generated synthetic MVTec-layout dataset with a RANDOM-init WRN50-2.

The README's main command (no downloads, ~1-2 minutes on 2 CPU cores):

    python -m jad.train --config=configs/patchcore_synthetic.py --workdir=runs/patchcore_synthetic

Random weights are announced in the log and recorded in results.json; the numbers only show that
the pipeline works end to end, they are not comparable with published results.
"""

from jad.config_base import patchcore, variant


def get_config(arg=None):
    """``arg``: none = the main job above; "tiny" = the test size (``config_base.tiny``)."""
    return variant(patchcore("synthetic"), arg, demo)


def demo(c):
    c.backbone.weights = "random"
    return c
