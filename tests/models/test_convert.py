"""Weight conversion: .pth / .safetensors -> Flax/Orbax folder, provenance, and every bad input."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys

import jax
import numpy as np
import pytest
from jadtest import need
from model_helpers import REPO, random_state_dict
from safetensors.numpy import save_file

from jad import convert as cli
from jad.models import load_backbone
from jad.models.convert import (
    ConversionError,
    convert_file,
    flax_to_torch,
    identify_weights,
    read_state_dict,
    torch_layout,
    torch_to_flax,
)

torch = need("torch")  # the torch reference: skips without torch, fails under CI


@pytest.fixture(scope="module")
def r50_sd():
    return random_state_dict("resnet50", seed=21)


@pytest.fixture(scope="module")
def r50_pth(tmp_path_factory, r50_sd):
    p = tmp_path_factory.mktemp("r50") / "r50.pth"
    torch.save({k: torch.from_numpy(v) for k, v in r50_sd.items()}, p)
    return p


def test_layout_has_torchvision_key_counts():
    wrn = torch_layout("wide_resnet50_2")
    assert len(wrn) == 320 and sum(k == "bn_count" for _, k in wrn.values()) == 53
    assert wrn["layer1.0.downsample.1.running_var"] == ((256,), "bn_var")
    assert wrn["layer3.0.conv2.weight"] == ((512, 512, 3, 3), "conv")
    assert len(torch_layout("resnet50")) == 320
    assert torch_layout("resnet50")["layer3.0.conv2.weight"] == ((256, 256, 3, 3), "conv")


def test_golden_weights_keys_match_layout(make_inputs):
    """make_inputs.wide_resnet50_2_shapes() is torchvision's state_dict() order and shapes."""
    ref = [(k, s) for k, s, _ in make_inputs.wide_resnet50_2_shapes()]
    assert ref == [(k, s) for k, (s, _) in torch_layout("wide_resnet50_2").items()]


@pytest.mark.slow  # full-size WRN50-2 / ResNet-50 files
def test_pth_and_safetensors_give_same_variables(wrn_converted, wrn_files, wrn_sd):
    """Session conversion of the .pth (through Orbax) == the .safetensors read and mapped."""
    meta = json.loads((wrn_converted / "metadata.json").read_text())
    assert meta["arch"] == "wide_resnet50_2"  # inferred
    assert (meta["keys_in_file"], meta["keys_converted"], meta["keys_dropped"]) == (320, 267, 53)
    assert meta["fc_kept"] is True and meta["weights_guess"] == "unknown"
    assert meta["sha256"] == hashlib.sha256(wrn_files["pth"].read_bytes()).hexdigest()
    v_st, rep = torch_to_flax(read_state_dict(wrn_files["safetensors"]), "wide_resnet50_2")
    assert (rep["keys_converted"], rep["fc_kept"]) == (265, False)
    _, v_pth = load_backbone(wrn_converted)
    assert "fc" in v_pth["params"] and "fc" not in v_st["params"]
    v_pth["params"].pop("fc")
    assert jax.tree.structure(v_pth) == jax.tree.structure(v_st)
    for a, b in zip(jax.tree.leaves(v_pth), jax.tree.leaves(v_st), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # and the values are the torch ones, transposed
    np.testing.assert_array_equal(
        np.asarray(v_st["params"]["layer2_0"]["conv2"]["kernel"]),
        wrn_sd["layer2.0.conv2.weight"].transpose(2, 3, 1, 0),
    )
    assert not list(wrn_converted.parent.glob(".*"))  # no temporary folders left


def test_flax_to_torch_roundtrip(r50_sd):
    variables, rep = torch_to_flax(r50_sd, keep_fc=True)
    assert rep["arch"] == "resnet50"
    back = flax_to_torch(variables, "resnet50")
    assert list(back) == list(r50_sd)
    for k, v in r50_sd.items():
        np.testing.assert_array_equal(back[k], v, err_msg=k)


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_wrapped_checkpoint_and_module_prefix(tmp_path, r50_sd, wrapper):
    p = tmp_path / "ckpt.pth"
    wrapped = {wrapper: {f"module.{k}": torch.from_numpy(v) for k, v in r50_sd.items()}, "epoch": 3}
    torch.save(wrapped, p)
    sd = read_state_dict(p)
    assert list(sd) == list(r50_sd)
    torch_to_flax(sd, "resnet50")


def test_text_file_named_pth(tmp_path):
    p = tmp_path / "weights.pth"
    p.write_text("this is not a checkpoint\n")
    with pytest.raises(ConversionError, match="could not read .* truncated, corrupt"):
        read_state_dict(p)


def test_truncated_files(tmp_path, r50_pth, r50_sd):
    data = r50_pth.read_bytes()
    p = tmp_path / "cut.pth"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match="could not read"):
        read_state_dict(p)
    st = tmp_path / "full.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in r50_sd.items()}, str(st))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(st.read_bytes()[: st.stat().st_size // 3])
    with pytest.raises(ConversionError, match="could not read .* as .safetensors"):
        read_state_dict(cut)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_state_dict(tmp_path / "nope.pth")
    p = tmp_path / "weights.npz"
    p.write_bytes(b"\x00" * 64)
    with pytest.raises(ConversionError, match="neither a PyTorch checkpoint nor a .safetensors"):
        read_state_dict(p)


def test_wrong_architecture(r50_sd):
    with pytest.raises(ConversionError, match="holds resnet50 weights .* pass --arch resnet50"):
        torch_to_flax(r50_sd, "wide_resnet50_2")
    resnet18_like = {"layer1.0.conv1.weight": np.zeros((64, 64, 3, 3), np.float32)}
    with pytest.raises(ConversionError, match="not a ResNet-50 / Wide-ResNet-50-2"):
        torch_to_flax(resnet18_like)
    with pytest.raises(ConversionError, match="is missing"):
        torch_to_flax({"features.0.weight": np.zeros(3)})


def test_missing_and_unexpected_keys(r50_sd):
    sd = dict(r50_sd)
    del sd["layer2.1.bn2.running_var"]
    sd["layer5.0.conv1.weight"] = np.zeros((1,), np.float32)
    with pytest.raises(ConversionError) as e:
        torch_to_flax(sd)
    msg = str(e.value)
    assert "1 missing key(s): 'layer2.1.bn2.running_var'" in msg
    assert "1 unexpected key(s): 'layer5.0.conv1.weight'" in msg
    assert "\n" not in msg
    no_fc = {k: v for k, v in r50_sd.items() if not k.startswith("fc.")}
    torch_to_flax(no_fc)  # fine without fc
    with pytest.raises(ConversionError, match="missing key.*'fc.weight'.*drop --keep-fc"):
        torch_to_flax(no_fc, keep_fc=True)


def test_misshaped_key(r50_sd):
    sd = dict(r50_sd)
    sd["layer3.2.conv2.weight"] = np.zeros((256, 256, 1, 3), np.float32)
    with pytest.raises(
        ConversionError, match=r"mis-shaped .*layer3.2.conv2.weight is \[256, 256, 1, 3\]"
    ):
        torch_to_flax(sd)


def test_failed_conversion_keeps_existing_output(tmp_path, r50_pth):
    out = tmp_path / "r50"
    convert_file(r50_pth, out)
    before = (out / "metadata.json").read_text()
    bad = tmp_path / "bad.pth"
    bad.write_text("garbage")
    with pytest.raises(ConversionError):
        convert_file(bad, out)
    assert (out / "metadata.json").read_text() == before
    module, variables = load_backbone(out, "resnet50")
    assert "fc" not in variables["params"]
    meta = convert_file(r50_pth, out, keep_fc=True)  # a good re-run replaces it
    assert meta["fc_kept"] and json.loads((out / "metadata.json").read_text())["fc_kept"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pth", "r50"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConversionError, match="not a jad weights folder"):
        convert_file(r50_pth, tmp_path / "other")


def test_identify_weights_by_hash_and_name():
    v1 = identify_weights("whatever.pth", "95faca4d" + "0" * 56)
    assert (v1["tag"], v1["basis"], v1["arch"]) == ("tv_v1", "sha256", "wide_resnet50_2")
    assert "tv_in1k" in v1["weights_guess"] and not v1["looks_like_torchvision_v2"]
    v2 = identify_weights("x.pth", "9ba9bcbe" + "1" * 56)
    assert v2["looks_like_torchvision_v2"] and v2["basis"] == "sha256"
    assert identify_weights("wide_resnet50_2_imagenet1k_v2.pth", "ab" * 32)["tag"] == "tv_v2"
    assert identify_weights("wide_resnet50_racm-8234f177.pth", "ab" * 32)["basis"] == "filename"
    assert identify_weights("model.safetensors", "ab" * 32)["weights_guess"] == "unknown"
    assert identify_weights("resnet50_v2x.pth", "ab" * 32)["tag"] is None


def test_v2_warning(tmp_path, r50_pth, caplog):
    """A file named like torchvision's V2 weights (its hash cannot match) -> warning + metadata."""
    p = tmp_path / "resnet50-11ad3fa6.pth"
    p.write_bytes(r50_pth.read_bytes())
    with caplog.at_level(logging.WARNING):
        meta = convert_file(p, tmp_path / "out")
    assert meta["looks_like_torchvision_v2"] and meta["weights_guess_basis"] == "filename"
    assert any("IMAGENET1K_V2" in r.getMessage() for r in caplog.records)
    assert any("IMAGENET1K_V2" in w for w in meta["warnings"])


def test_cli_ok_and_errors(tmp_path, r50_sd, capsys):
    st = tmp_path / "r50.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in r50_sd.items()}, str(st))
    assert cli.main(["--src", str(st), "--out", str(tmp_path / "ok"), "--keep-fc"]) == 0
    assert "wrote" in capsys.readouterr().out
    rc = cli.main(["--src", str(st), "--out", str(tmp_path / "bad"), "--arch", "wide_resnet50_2"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and err.startswith("jad.convert: error: ")
    assert "pass --arch resnet50" in err
    assert not (tmp_path / "bad").exists()


def test_cli_subprocess_exit_code(tmp_path):
    bad = tmp_path / "w.pth"
    bad.write_text("not weights")
    r = subprocess.run(
        [sys.executable, "-m", "jad.convert", "--src", str(bad), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "could not read" in lines[0], r.stderr


@pytest.mark.slow  # full-size WRN50-2 / ResNet-50 files
def test_moco_v3_checkpoint_converts_its_base_encoder(tmp_path, r50_sd):
    """A MoCo v3 ``r-50-*ep.pth.tar``: ``state_dict`` with ``module.base_encoder.`` (+ a projection
    MLP as ``fc.*``), ``module.momentum_encoder.`` and ``module.predictor.`` keys."""
    t = lambda a: torch.from_numpy(np.asarray(a))
    rng = np.random.default_rng(0)
    mlp = {
        "fc.0.weight": rng.normal(size=(4096, 2048)).astype(np.float32),
        "fc.1.weight": np.ones(4096, np.float32),
        "fc.1.bias": np.zeros(4096, np.float32),
        "fc.1.running_mean": np.zeros(4096, np.float32),
        "fc.1.running_var": np.ones(4096, np.float32),
        "fc.1.num_batches_tracked": np.zeros((), np.int64),
        "fc.3.weight": rng.normal(size=(256, 4096)).astype(np.float32),
    }
    base = {k: v for k, v in r50_sd.items() if not k.startswith("fc.")}
    sd = {f"module.base_encoder.{k}": t(v) for k, v in {**base, **mlp}.items()}
    sd |= {f"module.momentum_encoder.{k}": t(v) * 0 for k, v in base.items()}
    sd |= {"module.predictor.0.weight": t(rng.normal(size=(4096, 256)).astype(np.float32))}
    src = tmp_path / "r-50-300ep.pth.tar"
    torch.save({"epoch": 300, "arch": "resnet50", "state_dict": sd, "optimizer": {"lr": 0.1}}, src)
    meta = convert_file(src, tmp_path / "moco", arch="resnet50")
    assert meta["source_layout"]["layout"] == "moco_v3"
    assert meta["source_layout"]["projection_keys_dropped"] == len(mlp)
    assert "MoCo v3" in meta["weights_guess"] and meta["fc_kept"] is False
    _, variables = load_backbone(tmp_path / "moco", "resnet50")
    back = flax_to_torch(jax.tree.map(np.asarray, variables), "resnet50")
    for k, v in base.items():  # the base encoder, not the (zeroed) momentum encoder
        if not k.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(back[k], v, err_msg=k)
    with pytest.raises(ConversionError, match="MoCo v3 checkpoint.*drop --keep-fc"):
        convert_file(src, tmp_path / "moco2", arch="resnet50", keep_fc=True)
