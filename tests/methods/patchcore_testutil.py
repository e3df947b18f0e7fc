"""Helpers shared by the PatchCore / CLI tests."""

from jadtest import tiny_config


def fast_config(root, **overrides):
    """PatchCore's tiny config on the small set: random resnet_tiny, 96 px inputs (12 x 12 patch
    grid), 64-d features, coreset 25 %, 4 heatmaps."""
    return tiny_config("patchcore", root, **overrides)
