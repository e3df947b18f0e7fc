"""Bad forms of the scale-out inputs are one-line errors: multi-host settings, detector files,
feature-cache budgets; and the feature-cache budget is an IO knob (not part of a model's identity)."""

from __future__ import annotations

import numpy as np
import pytest

from jad.utils.errors import UserError


@pytest.mark.parametrize(
    "address,n,i,match",
    [
        (None, 2, 0, "num_processes=2 needs --coordinator_address"),
        ("127.0.0.1:1", 2, 2, r"process_id=2 must be in \[0, 2\)"),
        ("127.0.0.1:1", 2, -1, r"process_id=-1 must be in \[0, 2\)"),
    ],
)
def test_bad_multihost_settings(monkeypatch, address, n, i, match):
    from jad.utils import distributed

    for var in distributed.ENV:
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(UserError, match=match) as err:
        distributed.initialize(address, n, i)
    assert "\n" not in str(err.value)
    assert not distributed.joined()


def test_one_process_needs_no_coordinator(monkeypatch):
    from jad.utils import distributed

    for var in distributed.ENV:
        monkeypatch.delenv(var, raising=False)
    assert distributed.initialize(None, None, None) is False


def test_a_file_that_is_not_a_detector(tmp_path):
    from jad import serving

    bad = tmp_path / "model.jax"
    bad.write_bytes(b"PK\x03\x04 not a detector")
    with pytest.raises(serving.DetectorError, match="is not a jad detector"):
        serving.load(bad)


def test_negative_feature_cache_budget(tmp_path):
    from jad.train_lib.feature_cache import compute_features

    batches = [{"image": np.zeros((2, 4, 4, 3), np.float32)}]
    with pytest.raises(UserError, match="feature_cache_gb=-1.0 must be >= 0"):
        compute_features(
            batches,
            lambda x: x,
            num_examples=2,
            num_batches=1,
            key="k",
            folder=tmp_path,
            budget_gb=-1.0,
            progress=False,
        )


def test_feature_cache_budget_is_not_part_of_the_fit_signature():
    from jad.config_base import patchcore
    from jad.train_lib import runner

    a, b = patchcore("synthetic"), patchcore("synthetic")
    b.patchcore.feature_cache_gb = 0.0
    assert runner.fit_signature(a) == runner.fit_signature(b)
    b.patchcore.coreset_ratio = 0.2
    assert runner.fit_signature(a) != runner.fit_signature(b)
