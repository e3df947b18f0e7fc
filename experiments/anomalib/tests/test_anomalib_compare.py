"""Tests of the anomalib comparison harness (jad env; the end-to-end one needs the anomalib venv).

Run: ``python3 -m pytest -q experiments/anomalib/tests`` (about 20 s; the slow end-to-end test
adds about a minute when /tmp/anomalib-venv exists, and is skipped otherwise).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parents[1]
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

import compare_table  # noqa: E402
import make_weights  # noqa: E402
import run_anomalib_patchcore as runner  # noqa: E402

GOLDEN = REPO.parent / "shared" / "golden"
VENV_PY = Path(os.environ.get("ANOMALIB_VENV", "/tmp/anomalib-venv")) / "bin" / "python"
needs_golden = pytest.mark.skipif(not GOLDEN.is_dir(), reason="shared/golden not beside the repo")


# ---------------------------------------------------------------------------------------------
# make_weights
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def golden_sd():
    if not GOLDEN.is_dir():
        pytest.skip("shared/golden not beside the repo")
    return make_weights.golden_state_dict(GOLDEN, 0)


@pytest.fixture(scope="module")
def weights_pth(golden_sd, tmp_path_factory):
    return make_weights.write_pth(golden_sd, tmp_path_factory.mktemp("w") / "wrn50.pth")


def test_golden_state_dict_matches_checksums(golden_sd):
    assert len(golden_sd) == 320
    assert list(golden_sd)[:2] == ["conv1.weight", "bn1.weight"]
    assert make_weights.verify_checksums(golden_sd, GOLDEN) < 1e-9


def test_verify_checksums_detects_a_change(golden_sd):
    bad = dict(golden_sd)
    bad["layer3.5.bn3.weight"] = golden_sd["layer3.5.bn3.weight"] * np.float32(1.001)
    with pytest.raises(AssertionError):
        make_weights.verify_checksums(bad, GOLDEN)


def test_written_pth_is_a_plain_torchvision_state_dict(golden_sd, weights_pth):
    torch = pytest.importorskip("torch")
    sd = torch.load(weights_pth, map_location="cpu", weights_only=True)
    assert list(sd) == list(golden_sd)
    for k, v in sd.items():
        ref = golden_sd[k]
        assert isinstance(v, torch.Tensor), k
        assert tuple(v.shape) == ref.shape, k
        assert str(v.dtype).removeprefix("torch.") == str(ref.dtype), k
    assert sd["bn1.num_batches_tracked"].shape == ()
    np.testing.assert_array_equal(
        sd["layer2.3.conv2.weight"].numpy(), golden_sd["layer2.3.conv2.weight"]
    )


def test_make_weights_cli_errors(tmp_path, capsys):
    assert make_weights.main(["--out", str(tmp_path / "w.npz")]) == 2
    assert "should end in .pth" in capsys.readouterr().err
    assert make_weights.main(["--out", str(tmp_path / "w.pth"), "--golden", str(tmp_path)]) == 2
    assert "make_inputs.py does not exist" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# run_anomalib_patchcore: argument and layout checks (stdlib only at import time)
# ---------------------------------------------------------------------------------------------
def _tree(root: Path, cats=("a", "b")) -> Path:
    for c in cats:
        (root / c / "train" / "good").mkdir(parents=True)
        (root / c / "test" / "good").mkdir(parents=True)
    (root / "not_a_category").mkdir()
    return root


def test_resolve_categories(tmp_path):
    root = _tree(tmp_path / "d")
    assert runner.resolve_categories(root, "all") == ["a", "b"]
    assert runner.resolve_categories(root, "b") == ["b"]
    with pytest.raises(runner.UsageError, match="category 'zz'"):
        runner.resolve_categories(root, "a,zz")
    with pytest.raises(runner.UsageError, match="not a directory"):
        runner.resolve_categories(tmp_path / "missing", "all")


def test_runner_cli_errors_are_one_line(tmp_path, capsys):
    root = _tree(tmp_path / "d")
    rc = runner.main(
        ["--data", str(root), "--weights", str(tmp_path / "no.pth"), "--out", str(tmp_path / "o")]
    )
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "run make_weights.py first" in err
    with pytest.raises(runner.UsageError, match="coreset-ratio"):
        runner.parse_args(["--data", "x", "--weights", "w", "--out", "o", "--coreset-ratio", "0"])


# ---------------------------------------------------------------------------------------------
# compare_table
# ---------------------------------------------------------------------------------------------
def _jad_results(path: Path) -> Path:
    t = {
        "features_s": 2.0,
        "coreset_s": 1.0,
        "fit_s": 3.0,
        "test_s": 2.0,
        "test_images_per_s": 10.0,
    }
    path.write_text(json.dumps({"timings": {"disc": t, "total_s": 9.0}}))
    return path


def _peer_results(path: Path) -> Path:
    t = {
        "features_s": 5.0,
        "features_wall_s": 8.0,
        "coreset_s": 30.0,
        "fit_s": 38.0,
        "test_images_per_s": 2.5,
    }
    path.write_text(json.dumps({"categories": {"disc": {"timings": t}, "weave": {"timings": t}}}))
    return path


def test_table_ratios(tmp_path):
    jad = compare_table.jad_timings(json.loads(_jad_results(tmp_path / "j.json").read_text()))
    peer = compare_table.peer_timings(json.loads(_peer_results(tmp_path / "a.json").read_text()))
    table = compare_table.build_table(jad, {"anomalib": peer})
    rows = {line.split("|")[2].strip(): line for line in table.splitlines()[2:] if "|" in line}
    # features: anomalib wall 8.0 s / jad 2.0 s; coreset 30/1; fit 38/3; test 10 img/s vs 2.5.
    assert rows["features (s)"].rstrip(" |").endswith("4.0x")
    assert rows["coreset (s)"].rstrip(" |").endswith("30.0x")
    assert rows["fit total (s)"].rstrip(" |").endswith("12.7x")
    assert rows["test (img/s)"].rstrip(" |").endswith("4.0x")
    assert "weave" in table  # listed as left out (not in jad's file)
    assert compare_table.ratio(2.0, 0.0, "s") is None


def test_table_cli(tmp_path, capsys):
    j, a = _jad_results(tmp_path / "j.json"), _peer_results(tmp_path / "a.json")
    out = tmp_path / "t.md"
    assert compare_table.main(["--jad", str(j), "--anomalib", str(a), "--out", str(out)]) == 0
    assert "| disc | coreset (s) | 1.00 | 30.0 | 30.0x |" in out.read_text()
    capsys.readouterr()
    assert compare_table.main(["--jad", str(tmp_path / "nope.json"), "--anomalib", str(a)]) == 2
    assert "do not exist" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# End to end inside the anomalib venv (skipped when it is not installed)
# ---------------------------------------------------------------------------------------------
def _tiny_mvtec(root: Path, n_train: int = 4) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, defect, n in (("train", "good", n_train), ("test", "good", 2), ("test", "cut", 2)):
        d = root / "toy" / split / defect
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            a = rng.integers(90, 110, (64, 64, 3)).astype(np.uint8)
            a = np.asarray(Image.fromarray(a).resize((256, 256), Image.BILINEAR)).copy()
            if defect != "good":
                a[100:130, 100:180] = 250
                m = np.zeros(a.shape[:2], np.uint8)
                m[100:130, 100:180] = 255
                md = root / "toy" / "ground_truth" / defect
                md.mkdir(parents=True, exist_ok=True)
                Image.fromarray(m).save(md / f"{i:03d}_mask.png")
            Image.fromarray(a).save(d / f"{i:03d}.png")
    return root


@pytest.mark.slow
@pytest.mark.skipif(not VENV_PY.is_file(), reason="anomalib venv not installed")
def test_anomalib_end_to_end(tmp_path, weights_pth):
    data = _tiny_mvtec(tmp_path / "data")
    out = tmp_path / "anomalib.json"
    cmd = [
        str(VENV_PY),
        str(HERE / "run_anomalib_patchcore.py"),
        "--data",
        str(data),
        "--weights",
        str(weights_pth),
        "--out",
        str(out),
        "--workdir",
        str(tmp_path / "runs"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["versions"]["anomalib"] == "2.7.0"
    cat = res["categories"]["toy"]
    w = cat["weights"]
    # 320 torchvision keys: 258 go into the layer3-truncated timm extractor, 62 (layer4 + fc) drop.
    assert (w["file_keys"], w["loaded_keys"], w["dropped_keys"]) == (320, 258, 62)
    assert w["dropped_prefixes"] == ["fc", "layer4"]
    assert w["max_abs_diff_vs_torchvision_layer2_layer3"] <= 1e-4
    # 4 train images x 28 x 28 patches of 512 + 1024 channels; 10 % coreset (floor).
    assert cat["bank_candidates"] == 4 * 784
    assert cat["memory_bank_shape"] == [int(4 * 784 * 0.1), 1536]
    t = cat["timings"]
    assert 0 < t["features_s"] <= t["features_wall_s"] < t["fit_s"] <= t["fit_wall_s"]
    assert 0 < t["coreset_s"] < t["fit_s"]
    assert t["test_images_per_s"] > 0 and t["test_model_images_per_s"] >= t["test_images_per_s"]
    assert cat["n_test"] == 4 and 0.0 <= cat["metrics"]["image_AUROC"] <= 1.0
