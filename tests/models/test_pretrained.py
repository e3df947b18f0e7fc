"""load_backbone / weights_info: random init, folder resolution, and the error messages."""

from __future__ import annotations

import json
import logging
import shutil

import jax.numpy as jnp
import pytest

from jad.models import load_backbone, weights_info
from jad.models.pretrained import WeightsMismatchError, WeightsNotFoundError


def test_random_is_loud(caplog):
    with caplog.at_level(logging.WARNING):
        module, variables = load_backbone("random", "resnet50", seed=3, dtype=jnp.bfloat16)
    assert any("RANDOMLY INITIALISED resnet50" in r.getMessage() for r in caplog.records)
    assert module.dtype == jnp.bfloat16 and module.width_per_group == 64
    assert variables["params"]["layer1_0"]["conv1"]["kernel"].dtype == jnp.float32
    assert variables["params"]["fc"]["kernel"].shape == (2048, 1000)
    assert weights_info("random", "resnet50")["random"] is True


def test_random_only_arch_refuses_a_weights_folder(tmp_path, monkeypatch):
    """resnet_tiny (the tiny configs' backbone) has no converted weights: a folder, a bare name
    or None is one clear error, with or without $JAD_WEIGHTS_DIR."""
    for env in (None, str(tmp_path)):
        if env is None:
            monkeypatch.delenv("JAD_WEIGHTS_DIR", raising=False)
        else:
            monkeypatch.setenv("JAD_WEIGHTS_DIR", env)
        for weights in (str(tmp_path), "some_name", None):
            for call in (load_backbone, weights_info):
                with pytest.raises(WeightsMismatchError, match="has no converted weights"):
                    call(weights, "resnet_tiny")
    assert weights_info("random", "resnet_tiny")["random"] is True


@pytest.mark.slow  # converts WRN50-2 weights
def test_bare_name_and_none_resolve_under_env(wrn_converted, monkeypatch):
    monkeypatch.setenv("JAD_WEIGHTS_DIR", str(wrn_converted.parent))
    module, variables = load_backbone(wrn_converted.name)
    assert variables["params"]["conv1"]["kernel"].shape == (7, 7, 3, 64)
    info = weights_info(wrn_converted.name)
    meta = json.loads((wrn_converted / "metadata.json").read_text())
    assert info["sha256"] == meta["sha256"] and info["random"] is False
    assert info["source"] == "wrn_random.pth" and info["arch"] == "wide_resnet50_2"
    with pytest.raises(WeightsNotFoundError) as e:  # None -> $JAD_WEIGHTS_DIR/wide_resnet50_2
        load_backbone(None)
    msg = str(e.value)
    target = wrn_converted.parent / "wide_resnet50_2"
    assert (
        f"python -m jad.convert --src /path/to/wide_resnet50_2-95faca4d.pth --out {target}" in msg
    )


@pytest.mark.slow  # converts WRN50-2 weights
def test_empty_weights_means_env_default_everywhere(wrn_converted, monkeypatch, tmp_path):
    """backbone.weights="" is one rule for the method and the provenance: $JAD_WEIGHTS_DIR/<arch>,
    never the current directory."""
    from jad.models.pretrained import resolve_weights_dir

    monkeypatch.chdir(tmp_path)  # a folder that is not a weights folder
    monkeypatch.setenv("JAD_WEIGHTS_DIR", str(wrn_converted.parent))
    assert resolve_weights_dir("", "wide_resnet50_2") == resolve_weights_dir(
        None, "wide_resnet50_2"
    )
    assert resolve_weights_dir("", "resnet50") == wrn_converted.parent / "resnet50"
    (wrn_converted.parent / "wide_resnet50_2").symlink_to(wrn_converted)
    info = weights_info("")
    assert info["path"] == str((wrn_converted.parent / "wide_resnet50_2").absolute())
    _, variables = load_backbone("")
    assert variables["params"]["conv1"]["kernel"].shape == (7, 7, 3, 64)
    monkeypatch.delenv("JAD_WEIGHTS_DIR")
    for fn in (weights_info, load_backbone):
        with pytest.raises(WeightsNotFoundError, match="JAD_WEIGHTS_DIR is not set"):
            fn("")


def test_missing_env_and_missing_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("JAD_WEIGHTS_DIR", raising=False)
    with pytest.raises(
        WeightsNotFoundError, match="JAD_WEIGHTS_DIR is not set.*python -m jad.convert"
    ):
        load_backbone("wrn50")
    with pytest.raises(FileNotFoundError, match=f"--out {tmp_path / 'nowhere'}"):
        load_backbone(tmp_path / "nowhere", "resnet50")


@pytest.mark.slow  # converts WRN50-2 weights
def test_arch_mismatch_and_bad_metadata(wrn_converted, tmp_path):
    with pytest.raises(
        WeightsMismatchError, match="holds wide_resnet50_2 weights but arch is resnet50"
    ):
        load_backbone(wrn_converted, "resnet50")
    with pytest.raises(ValueError, match="unknown arch"):
        load_backbone("random", "resnet18")
    broken = tmp_path / "broken"
    (broken / "variables").mkdir(parents=True)
    (broken / "metadata.json").write_text("{not json")
    with pytest.raises(WeightsMismatchError, match="not valid JSON"):
        load_backbone(broken)


@pytest.mark.slow  # converts WRN50-2 weights
def test_mis_shaped_checkpoint_is_caught(wrn_converted, tmp_path):
    """A folder whose metadata claims resnet50 but holds WRN arrays: shapes are checked."""
    fake = tmp_path / "fake"
    shutil.copytree(wrn_converted, fake)
    meta = json.loads((fake / "metadata.json").read_text())
    (fake / "metadata.json").write_text(json.dumps({**meta, "arch": "resnet50"}))
    with pytest.raises(WeightsMismatchError, match="mis-shaped arrays for resnet50"):
        load_backbone(fake, "resnet50")
