"""PatchCore fitted from an on-disk feature store (streaming coreset) equals the in-memory fit."""

from __future__ import annotations

import numpy as np
import pytest
from patchcore_testutil import fast_config


@pytest.mark.slow
def test_patchcore_fit_from_disk_equals_in_memory(small_synthetic, tmp_path):
    """A budget of 0 GiB puts the features on disk: the bank and scores are the in-memory ones."""
    from jad.methods.common import FitContext
    from jad.methods.patchcore import PatchCore
    from jad.train_lib import runner

    config = fast_config(small_synthetic)
    mem = PatchCore(config, mesh=False)
    config_disk = fast_config(small_synthetic)
    config_disk.patchcore.feature_cache_gb = 0.0
    disk = PatchCore(config_disk, backbone=(mem.module, mem.variables), mesh=False)
    train = runner.make_loader(config, small_synthetic, "disc", "train")
    key = runner.category_key(0, "disc")
    a = mem.fit(train, key=key, ctx=FitContext(tmp_path / "a", progress=False))
    b = disk.fit(train, key=key, ctx=FitContext(tmp_path / "b", progress=False))
    assert a.info["features_in"] == "memory"
    assert b.info["features_in"] == "disk (streaming coreset)"
    assert list((tmp_path / "b" / "feature_cache").glob("*.npy"))
    np.testing.assert_array_equal(a.state["coreset_indices"], b.state["coreset_indices"])
    np.testing.assert_array_equal(a.state["bank"], b.state["bank"])
