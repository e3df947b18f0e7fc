"""The entry points as a user runs them: one clear error line and a non-zero exit on bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}


def run(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_error_line(proc) -> str:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_unknown_config_key():
    line = one_error_line(
        run("jad.train", "--config=configs/patchcore_synthetic.py", "--config.patchcore.zzz=3")
    )
    assert "unknown config key 'patchcore.zzz'" in line and "coreset_ratio" in line


def test_unknown_top_level_key_and_missing_config_file():
    assert "unknown config key 'zzz'" in one_error_line(
        run("jad.train", "--config=configs/patchcore_synthetic.py", "--config.zzz=1")
    )
    assert "does not exist" in one_error_line(run("jad.train", "--config=configs/nope.py"))
    assert "--config" in one_error_line(run("jad.train"))


def test_unknown_config_variant():
    line = one_error_line(run("jad.train", "--config=configs/patchcore_synthetic.py:huge"))
    assert "unknown config variant 'huge'" in line and "tiny" in line


def test_bad_override_value():
    line = one_error_line(
        run("jad.train", "--config=configs/patchcore_synthetic.py", "--config.seed=abc")
    )
    assert "seed" in line


def test_missing_dataset_root(tmp_path):
    line = one_error_line(
        run(
            "jad.train",
            "--config=configs/patchcore_mvtec.py",
            f"--workdir={tmp_path / 'w'}",
            f"--config.data.root={tmp_path / 'no_such_mvtec'}",
            "--config.backbone.weights=random",
        )
    )
    assert "no_such_mvtec" in line


@pytest.mark.slow
def test_missing_weights(tmp_path, small_synthetic):
    line = one_error_line(
        run(
            "jad.train",
            "--config=configs/patchcore_synthetic.py",  # WRN50-2: an arch with converted weights
            f"--workdir={tmp_path / 'w'}",
            f"--config.data.root={small_synthetic}",
            f"--config.backbone.weights={tmp_path / 'no_weights'}",
        )
    )
    assert "python -m jad.convert" in line


def test_evaluate_and_predict_without_a_run(tmp_path):
    assert "does not exist" in one_error_line(run("jad.evaluate", f"--workdir={tmp_path / 'none'}"))
    (tmp_path / "empty").mkdir()
    assert "jad.train" in one_error_line(
        run("jad.predict", f"--workdir={tmp_path / 'empty'}", "--images=x")
    )


@pytest.mark.slow
def test_train_evaluate_predict_cli(tmp_path, small_synthetic):
    w = tmp_path / "w"
    common = [
        f"--config.data.root={small_synthetic}",
        "--config.data.categories=disc",
        "--config.data.use_tfds=True",  # the default data path of the README's command
    ]
    p = run(
        "jad.train",
        "--config=configs/patchcore_synthetic.py:tiny",
        f"--workdir={w}",
        "--quiet",
        *common,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert "I-AUROC" in p.stdout and "mean" in p.stdout and "heatmaps [disc]" in p.stdout
    assert "at the calibrated thresholds" in p.stdout and "I-FAR" in p.stdout
    results = json.loads((w / "results.json").read_text())
    assert set(results["metrics"]) == {"disc", "mean"}
    assert f"report: {w / 'report.html'}" in p.stdout and (w / "report.html").is_file()
    assert (w / "disc" / "report_data.npz").is_file()

    p = run("jad.evaluate", f"--workdir={w}", "--quiet")
    assert p.returncode == 0, p.stderr[-3000:]
    evaluated = json.loads((w / "eval_results.json").read_text())
    assert evaluated["metrics"]["disc"] == results["metrics"]["disc"]
    assert evaluated["calibrated"] == results["calibrated"]  # decisions at the stored thresholds
    assert "at the calibrated thresholds" in p.stdout
    assert "report:" in p.stdout  # rewritten from the re-evaluation
    assert "eval_results.json (jad.evaluate" in (w / "report.html").read_text()

    test_dir = Path(small_synthetic) / "disc" / "test"
    p = run("jad.predict", f"--workdir={w}", f"--images={test_dir}", f"--out={tmp_path / 'pred'}")
    assert p.returncode == 0, p.stderr[-3000:]
    pred = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    n_test = len([f for f in test_dir.rglob("*.png")])
    assert len(pred["predictions"]) == n_test
    # same images, same model: the scores equal the ones the training run recorded
    recorded = results["details"]["disc"]["image_scores"]
    cal = results["details"]["disc"]["calibration"]
    for r in pred["predictions"]:
        assert r["image_score"] == pytest.approx(recorded[r["path"]], rel=1e-5, abs=1e-6)
        assert Path(r["heatmap"]).is_file()
        # raw score, normalised score (0.5 = threshold), decision, predicted defect mask
        above = r["image_score"] > cal["image_threshold"]
        assert r["decision"] == ("defective" if above else "good")
        assert (r["normalised_score"] > 0.5) == above
        assert Path(r["defect_mask"]).is_file() and 0.0 <= r["defect_fraction"] <= 1.0
    assert any(r["ground_truth_mask"] for r in pred["predictions"])  # found beside defects
    assert pred["decision_rule"].startswith("defective iff raw score >")
    page = (tmp_path / "pred" / "predictions.html").read_text()
    assert page.count("<img ") == n_test and "sorted by score" in p.stdout.lower()
    # the panel is captioned: 16 px strip over the 96 px panel
    from PIL import Image

    assert Image.open(pred["predictions"][0]["heatmap"]).size[1] == 96 + 16
    p = run("jad.predict", f"--workdir={w}", f"--images={tmp_path / 'nothing_here'}")
    assert "no images found" in one_error_line(p)


@pytest.mark.slow
def test_random_only_arch_with_weights_is_one_error_line(tmp_path, small_synthetic):
    line = one_error_line(
        run(
            "jad.train",
            "--config=configs/patchcore_synthetic.py:tiny",
            f"--workdir={tmp_path / 'w'}",
            f"--config.data.root={small_synthetic}",
            "--config.backbone.weights=some_weights",
        )
    )
    assert "'resnet_tiny' has no converted weights" in line and "backbone.weights=random" in line
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_unknown_category_and_bad_mask_mode(tmp_path, small_synthetic):
    base = [
        "jad.train",
        "--config=configs/patchcore_synthetic.py:tiny",
        f"--workdir={tmp_path / 'w'}",
    ]
    line = one_error_line(
        run(*base, f"--config.data.root={small_synthetic}", "--config.data.categories=nope")
    )
    assert "unknown category 'nope'" in line and "disc" in line
    line = one_error_line(
        run(*base, f"--config.data.root={small_synthetic}", "--config.data.mask_mode=fuzzy")
    )
    assert "mask_mode" in line or "fuzzy" in line
    assert not (tmp_path / "w" / "disc" / "checkpoint").exists()
