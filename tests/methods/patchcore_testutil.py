"""Helpers shared by the PatchCore / CLI tests."""

from jad.config_base import patchcore


def fast_config(root, **overrides):
    """PatchCore on the small set: random WRN50, 96 px inputs (12 x 12 patch grid)."""
    c = patchcore("synthetic")
    c.data.root = str(root)
    c.data.resize = 96
    c.data.crop = 96
    c.data.batch_size = 4
    c.data.use_tfds = False
    c.patchcore.coreset_ratio = 0.25
    c.eval.num_heatmaps = 4
    return with_overrides(c, overrides)


def with_overrides(c, overrides: dict):
    """``c`` with dotted-key overrides applied in place (``{"train.epochs": 3}``); returns ``c``."""
    for k, v in overrides.items():
        node = c
        *parents, leaf = k.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = v
    return c
