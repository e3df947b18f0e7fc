"""PBAS through the training library on the small synthetic set: learning, exact resume after
``kill -9``, protocols, the feature cache, TensorBoard, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from jadtest import seed_from_env, tiny_config

from jad.train_lib import checkpoint, runner
from jad.utils.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def small_config(root, **overrides):
    """PBAS's tiny config on the small set (6 train images): random WRN50, 64 px (8 x 8 patches),
    batch 2, 4 epochs."""
    return tiny_config("pbas", root, **overrides)


@pytest.fixture(scope="module")
def trained(small_synthetic, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pbas")
    config = small_config(small_synthetic, **{"train.epochs": 12, "data.categories": "disc"})
    return config, workdir, runner.train_and_evaluate(config, workdir, progress=False)


@pytest.mark.slow
def test_pbas_learns_on_the_synthetic_set(trained):
    """Learning, not AUROC (random backbone weights: see shared/notes/open_issues_faq.md). On the
    epoch means (the per-batch values are noisy): the loss falls, the features move towards their
    centres (the ABL term r shrinks) and the discriminator's BCE falls. With random-weight features
    at this scale the discriminator does not (yet) separate normal from synthetic rows (p ~ 0.5),
    which is also what the official code does on random features; that is reported, not tested."""
    config, workdir, results = trained
    d = results["details"]["disc"]
    assert d["steps"] == 36 and d["protocol"].startswith("last step")
    assert results["protocol"] == d["protocol"]
    hist = d["history"]
    assert [h["epoch"] for h in hist] == list(range(12))
    first, last = hist[0], hist[-1]
    assert last["loss"] < 0.7 * first["loss"], (first, last)
    assert last["svdd"] < 0.7 * first["svdd"], (first, last)
    assert last["bce_true"] + last["bce_fake"] < first["bce_true"] + first["bce_fake"]
    for k in runner.METRIC_KEYS:  # evaluated on the test set: the seven keys, fractions
        assert 0.0 <= results["metrics"]["disc"][k] <= 1.0


@pytest.mark.slow
def test_report_shows_the_training_history(trained):
    """The report (jad.report) holds results.json's numbers, the losses and the protocol."""
    from report_testutil import check_report

    _, workdir, results = trained
    page = check_report(workdir, results)
    assert page.count("<img ") >= 5  # histogram, ROC, PR, PRO, losses (+ gallery panels)


@pytest.mark.slow
def test_tensorboard_and_saved_model(trained):
    config, workdir, results = trained
    events = list((workdir / "disc" / "tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 1000  # scalars + heatmap images
    state, meta = checkpoint.restore(workdir / "disc" / "checkpoint")
    assert set(state) == {"params", "batch_stats"} and meta["method"] == "pbas"
    assert meta["fit_info"]["protocol"] == results["details"]["disc"]["protocol"]
    # evaluate from the saved model gives the same metrics
    again = runner.evaluate_workdir(workdir, progress=False)
    assert again["metrics"]["disc"] == results["metrics"]["disc"]


@pytest.mark.slow
def test_rerun_restores_and_changed_config_is_refused(trained):
    config, workdir, results = trained
    again = runner.train_and_evaluate(config, workdir, progress=False)
    assert again["metrics"] == results["metrics"]
    before = {p: p.read_bytes() for p in workdir.glob("*.json")}
    other = small_config(config.data.root, **{"train.epochs": 13, "data.categories": "disc"})
    with pytest.raises(UserError, match="different config.*nothing was overwritten"):
        runner.train_and_evaluate(other, workdir, progress=False)
    assert {p: p.read_bytes() for p in workdir.glob("*.json")} == before
    # logging / checkpoint cadence may change
    io_only = small_config(
        config.data.root, **{"train.epochs": 12, "data.categories": "disc", "train.log_every": 5}
    )
    assert runner.fit_signature(io_only) == runner.fit_signature(config)


@pytest.mark.slow
def test_select_val_holds_out_normals_and_labels_the_protocol(small_synthetic, tmp_path):
    config = small_config(
        small_synthetic,
        **{"train.select": "val", "train.val_fraction": 0.25, "data.categories": "weave"},
    )
    res = runner.train_and_evaluate(config, tmp_path / "w", progress=False)
    d = res["details"]["weave"]
    assert d["heldout_images"] == 1 and d["train_images"] == 4  # 6 - 1 calibration image
    assert res["protocol"] == "selected on held-out normal training images (normal-only criterion)"
    vals = [e["val_loss"] for e in d["evaluations"]]
    assert len(vals) == 4 and d["selected_step"] in [e["step"] for e in d["evaluations"]]
    best = d["evaluations"][int(np.argmin(vals))]["step"]
    assert d["selected_step"] == best


@pytest.mark.slow
def test_select_test_official_is_labelled_invalid(small_synthetic, tmp_path):
    config = small_config(
        small_synthetic, **{"train.select": "test_official", "data.categories": "weave"}
    )
    res = runner.train_and_evaluate(config, tmp_path / "w", progress=False)
    assert res["protocol"] == "test-selected (not a valid protocol)"
    ev = res["details"]["weave"]["evaluations"]
    assert len(ev) == 4 and all("test_metrics" in e for e in ev)
    crit = [e["test_metrics"]["image_auroc"] + e["test_metrics"]["pixel_auroc"] for e in ev]
    assert res["details"]["weave"]["selected_step"] == ev[int(np.argmax(crit))]["step"]


@pytest.mark.slow
def test_feature_cache_on_disk_is_reused(small_synthetic, tmp_path):
    config = small_config(
        small_synthetic,
        **{"train.feature_cache_gb": 0.0, "data.categories": "weave", "train.epochs": 1},
    )
    res = runner.train_and_evaluate(config, tmp_path / "w", progress=False)
    assert res["details"]["weave"]["feature_cache"]["where"] == "disk"
    cached = list((tmp_path / "w" / "weave" / "feature_cache").glob("*.npy"))
    assert len(cached) == 1
    feats = np.load(cached[0], mmap_mode="r")
    # 6 train images - 1 held out for calibration; 8 x 8 patches
    assert feats.shape == (5, 64, config.pbas.pretrain_embed_dim)
    # a second run with the same features (another training length) reuses the file
    import shutil

    shutil.rmtree(tmp_path / "w" / "weave" / "checkpoint")
    shutil.rmtree(tmp_path / "w" / "weave" / "train")
    config2 = small_config(
        small_synthetic,
        **{"train.feature_cache_gb": 0.0, "data.categories": "weave", "train.epochs": 2},
    )
    res2 = runner.train_and_evaluate(config2, tmp_path / "w", progress=False)
    assert res2["details"]["weave"]["feature_cache"]["where"] == "disk (reused)"


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("train.select", "best", "train.select='best' is unknown"),
        ("train.parallel", "gspmd", "train.parallel='gspmd' is unknown"),
        ("train.batch_size", 0, "train.batch_size=0 must be >= 1"),
        ("pbas.k", -0.1, "pbas.k=-0.1 must be a positive number"),
        ("pbas.precision", "fp8", "pbas.precision='fp8' is unknown"),
        ("pbas.dsc_layers", 3, "pbas.dsc_layers must be 2"),
        ("data.category_resize", "wood=329", "expected comma-separated category:size pairs"),
    ],
)
def test_bad_config_values_are_one_line_errors(small_synthetic, tmp_path, key, value, match):
    config = small_config(small_synthetic, **{key: value, "data.categories": "weave"})
    with pytest.raises(UserError, match=match):
        runner.train_and_evaluate(config, tmp_path / "w", progress=False)
    assert not (tmp_path / "w" / "weave" / "checkpoint").exists()


def _cli(*args, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "jad.train", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_headline_command_without_data_or_weights_says_what_to_do(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "JAD_WEIGHTS_DIR"}
    out = _cli("--config=configs/pbas_mvtec.py", f"--workdir={tmp_path / 'w'}", env=env)
    assert out.returncode == 2
    lines = [x for x in out.stderr.strip().splitlines() if x.startswith("error:")]
    assert len(lines) == 1, out.stderr
    msg = lines[0]
    assert "mvtec dataset folder (data.root)" in msg and "converted backbone weights" in msg
    assert "python -m jad.train --config=configs/pbas_mvtec.py --config.data.root=" in msg
    assert "--config.backbone.weights=" in msg and "python -m jad.convert" in msg
    assert not (tmp_path / "w").exists()  # nothing written, no fallback run


def _train_cmd(root, workdir):
    return [
        sys.executable,
        "-m",
        "jad.train",
        "--config=configs/pbas_synthetic.py:tiny",
        f"--workdir={workdir}",
        f"--config.data.root={root}",
        "--config.data.categories=disc",
        "--config.train.checkpoint_every=1",
        "--config.train.eval_every=2",
        "--config.eval.num_heatmaps=0",
        "--quiet",
    ]


@pytest.mark.determinism
@pytest.mark.slow
def test_kill_9_mid_training_then_rerun_is_bit_identical(small_synthetic, tmp_path):
    """A real subprocess killed with SIGKILL while training (or while saving a checkpoint), then
    the same command again: the final parameters and every test score equal an uninterrupted run
    bit for bit."""
    full = subprocess.run(
        _train_cmd(small_synthetic, tmp_path / "full"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert full.returncode == 0, full.stderr[-2000:]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _train_cmd(small_synthetic, killed),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    # the kill moment is drawn from a seed printed here (shown when the test fails) and settable:
    # JAD_KILL_SEED=<seed> pytest ... replays a failure
    seed = seed_from_env("JAD_KILL_SEED", lambda: time.time_ns() % 2**31)
    target = int(np.random.default_rng(seed).integers(2, 7))
    print(f"kill seed {seed} (JAD_KILL_SEED={seed} replays it): SIGKILL at step {target}")
    while time.time() < deadline and proc.poll() is None:
        steps = (
            [p.name.split(".")[0] for p in (killed / "disc" / "train").glob("*")]
            if (killed / "disc" / "train").is_dir()
            else []
        )
        if any(s.isdigit() and int(s) >= target for s in steps):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "disc" / "checkpoint").exists()
    again = subprocess.run(
        _train_cmd(small_synthetic, killed), cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming from step" in again.stderr + again.stdout
    a, _ = checkpoint.restore(tmp_path / "full" / "disc" / "checkpoint")
    b, meta = checkpoint.restore(killed / "disc" / "checkpoint")
    assert meta["fit_info"]["resumed_from_step"] >= 1
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    ra = json.loads((tmp_path / "full" / "results.json").read_text())["details"]["disc"]
    rb = json.loads((killed / "results.json").read_text())["details"]["disc"]
    assert ra["image_scores"] == rb["image_scores"]


@pytest.mark.slow
def test_nan_loss_stops_with_one_line_and_rerun_resumes_from_the_last_good_checkpoint(
    small_synthetic, tmp_path, monkeypatch
):
    """Fail safe: a NaN injected into the step-5 loss stops training with one sentence naming the
    step and the last good checkpoint; that checkpoint stays intact and the rerun resumes from it."""
    from jad.methods import pbas as pbas_module

    config = small_config(
        small_synthetic,
        **{"data.categories": "weave", "train.checkpoint_every": 2, "train.epochs": 3},
    )
    real = pbas_module.PBAS.train_step

    def poisoned(self, state, batch, axis_name=None):
        new, metrics = real(self, state, batch, axis_name)
        bad = jax.numpy.where(state.step == 4, jax.numpy.nan, 0.0)  # the 5th step
        return new, {**metrics, "loss": metrics["loss"] + bad}

    monkeypatch.setattr(pbas_module.PBAS, "train_step", poisoned)
    w = tmp_path / "w"
    with pytest.raises(UserError) as e:
        runner.train_and_evaluate(config, w, progress=False)
    msg = str(e.value)
    assert "training stopped at step 5: non-finite loss" in msg
    assert "last good checkpoint (step 4)" in msg and "resumes from it" in msg
    assert "\n" not in msg
    train_dir = w / "weave" / "train"
    assert checkpoint.latest_step(train_dir) == 4 and not (w / "weave" / "checkpoint").exists()
    meta = checkpoint.read_meta(train_dir)
    assert meta["step"] == 4
    monkeypatch.setattr(pbas_module.PBAS, "train_step", real)
    res = runner.train_and_evaluate(config, w, progress=False)
    assert (
        res["details"]["weave"]["resumed_from_step"] == 4 and res["details"]["weave"]["steps"] == 9
    )


def test_divergence_rule():
    from jad.train_lib.loop import _unhealthy

    assert _unhealthy({"loss": 1.0}, float("inf"), 1000.0) is None  # first epoch: no reference yet
    assert _unhealthy({"loss": 999.0}, 1.0, 1000.0) is None
    assert "diverged" in _unhealthy({"loss": 1001.0}, 1.0, 1000.0)
    assert _unhealthy({"loss": 1e9}, 1.0, 0.0) is None  # rule off
    assert "non-finite bce" in _unhealthy({"loss": 1.0, "bce": float("inf")}, 1.0, 1000.0)


@pytest.mark.slow
def test_export_round_trip(trained, tmp_path):
    from export_testutil import check_export

    _, workdir, _ = trained
    check_export(workdir, "disc", tmp_path / "pbas.jax", exact=False)
