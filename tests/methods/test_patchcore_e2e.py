"""PatchCore end to end on the generated synthetic set: fit, checkpoint, evaluate, restore, devices."""

import json
import os
import struct
from pathlib import Path

import jax
import numpy as np
import pytest
from patchcore_testutil import fast_config

from jad.methods import FitContext
from jad.methods.patchcore import PatchCore
from jad.train_lib import checkpoint, runner
from jad.utils.errors import UserError


@pytest.fixture(scope="module")
def trained(small_synthetic, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    config = fast_config(small_synthetic)
    results = runner.train_and_evaluate(config, workdir, progress=False)
    return config, workdir, results


def test_results_json_keys_and_metrics_above_chance(trained):
    config, workdir, results = trained
    saved = json.loads((workdir / "results.json").read_text())
    assert set(saved["metrics"]) == {"weave", "disc", "mean"}
    for cat in ("weave", "disc", "mean"):
        m = saved["metrics"][cat]
        assert set(m) >= set(runner.METRIC_KEYS)
        for k in runner.METRIC_KEYS:
            assert 0.0 <= m[k] <= 1.0, (cat, k, m[k])
    # random-init WRN50 still separates the synthetic defects: well above chance (0.5)
    assert saved["metrics"]["mean"]["image_auroc"] >= 0.75, saved["metrics"]
    assert saved["metrics"]["mean"]["pixel_auroc"] >= 0.75, saved["metrics"]
    assert saved["backbone"]["random"] is True
    assert saved["config"]["patchcore"]["coreset_ratio"] == 0.25
    for cat in ("weave", "disc"):
        t = saved["timings"][cat]
        assert {"features_s", "coreset_s", "fit_s", "test_s", "test_images_per_s"} <= set(t)
        # 6 train images, 1 held out for calibration (10 %, at least one): 5 x 12 x 12 patches
        assert saved["details"][cat]["train_patches"] == 5 * 144
        assert saved["details"][cat]["bank_size"] == int(5 * 144 * 0.25)
        cal = saved["details"][cat]["calibration"]
        assert cal["holdout_images"] == 1 and cal["image_fpr_guaranteed"] == 0.5  # 1 / (n + 1)
        assert set(saved["details"][cat]["calibrated"]["image"]) >= {"f1", "false_alarm_rate"}
    assert saved["calibrated"]["protocol"].startswith("thresholds calibrated on held-out normal")
    assert (workdir / "metrics.csv").is_file() and (workdir / "metrics.json").is_file()


def test_heatmaps_written(trained):
    _, workdir, _ = trained
    for cat in ("weave", "disc"):
        pngs = sorted((workdir / cat / "heatmaps").glob("*.png"))
        assert len(pngs) == 4  # eval.num_heatmaps
        from PIL import Image

        im = np.asarray(Image.open(pngs[0]))
        assert im.shape == (96, 4 * 96 + 3 * 4, 3)  # image | heatmap | overlay | mask


def test_evaluate_from_checkpoint_matches(trained):
    _, workdir, results = trained
    again = runner.evaluate_workdir(workdir, progress=False)
    for cat in ("weave", "disc"):
        for k in runner.METRIC_KEYS:
            assert again["metrics"][cat][k] == results["metrics"][cat][k], (cat, k)


def test_rerun_restores_and_refuses_other_config(trained):
    config, workdir, results = trained
    before = (workdir / "weave" / "checkpoint").stat().st_mtime_ns
    again = runner.train_and_evaluate(config, workdir, progress=False)
    assert again["metrics"]["weave"] == results["metrics"]["weave"]
    written = {p: p.read_bytes() for p in workdir.glob("*.json")}
    assert set(written) >= {workdir / "config.json", workdir / "results.json"}
    other = fast_config(config.data.root, **{"patchcore.coreset_ratio": 0.5})
    with pytest.raises(UserError, match="different config.*nothing was overwritten"):
        runner.train_and_evaluate(other, workdir, progress=False)
    assert (workdir / "weave" / "checkpoint").stat().st_mtime_ns == before
    # "nothing was overwritten" is true: config.json and results.json are byte-identical
    assert {p: p.read_bytes() for p in workdir.glob("*.json")} == written
    state, meta = checkpoint.restore(workdir / "weave" / "checkpoint")
    assert meta["fit_signature"] == runner.fit_signature(config)


def test_bad_backbone_dtype_is_one_clear_error_before_anything_is_written(
    small_synthetic, tmp_path
):
    config = fast_config(small_synthetic, **{"backbone.dtype": "float16"})
    with pytest.raises(UserError, match="backbone.dtype='float16' is not supported.*bfloat16"):
        runner.train_and_evaluate(config, tmp_path / "w", progress=False)
    assert not (tmp_path / "w").exists()


def test_results_json_has_no_nan(trained):
    _, workdir, _ = trained
    text = (workdir / "results.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"results.json holds {c}"))


@pytest.mark.slow
def test_saved_bank_scores_identically(trained, tmp_path):
    config, workdir, _ = trained
    state, _ = checkpoint.restore(workdir / "disc" / "checkpoint")
    checkpoint.save(tmp_path / "ck", state, {"note": "copy"})
    state2, meta2 = checkpoint.restore(tmp_path / "ck")
    assert meta2 == {"note": "copy"}
    method = PatchCore(config)
    images = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (3, 96, 96, 3)), np.float32)
    a, b = method.predict(state, images), method.predict(state2, images)
    np.testing.assert_array_equal(a.image_scores, b.image_scores)
    np.testing.assert_array_equal(a.anomaly_maps, b.anomaly_maps)


@pytest.mark.determinism
@pytest.mark.slow
def test_one_vs_eight_devices_identical(small_synthetic):
    assert jax.device_count() == 8
    config = fast_config(small_synthetic)
    single = PatchCore(config, mesh=False)
    backbone = (single.module, single.variables)
    multi = PatchCore(config, backbone=backbone)
    assert single.mesh is None and multi.mesh is not None and multi.mesh.size == 8
    train = runner.make_loader(config, small_synthetic, "disc", "train")
    key = runner.category_key(0, "disc")
    fit1 = single.fit(train, key=key, ctx=FitContext(progress=False))
    fit8 = multi.fit(train, key=key, ctx=FitContext(progress=False))
    np.testing.assert_array_equal(fit1.state["coreset_indices"], fit8.state["coreset_indices"])
    np.testing.assert_array_equal(fit1.state["bank"], fit8.state["bank"])
    batch = next(iter(runner.make_loader(config, small_synthetic, "disc", "test")))
    p1, p8 = single.predict(fit1.state, batch["image"]), multi.predict(fit8.state, batch["image"])
    np.testing.assert_array_equal(p1.image_scores, p8.image_scores)
    np.testing.assert_array_equal(p1.anomaly_maps, p8.anomaly_maps)


@pytest.mark.slow
def test_reweighting_and_euclidean_options(small_synthetic, trained):
    config, workdir, _ = trained
    state, _ = checkpoint.restore(workdir / "disc" / "checkpoint")
    batch = next(iter(runner.make_loader(config, small_synthetic, "disc", "test")))
    base = PatchCore(config).predict(state, batch["image"])
    rw = PatchCore(fast_config(small_synthetic, **{"patchcore.reweight": True})).predict(
        state, batch["image"]
    )
    # Eq. 7: (1 - 1/b) s* <= s < s* with b = 9 support rows (s rounds to s* in float32 when the
    # softmax weight of m* is below the float32 resolution of 1)
    assert np.all(rw.image_scores <= base.image_scores)
    assert np.any(rw.image_scores < base.image_scores)
    assert np.all(rw.image_scores >= (1 - 1 / 9) * base.image_scores - 1e-6)
    eu = PatchCore(fast_config(small_synthetic, **{"patchcore.distance": "euclidean"})).predict(
        state, batch["image"]
    )
    np.testing.assert_allclose(eu.image_scores, np.sqrt(base.image_scores), rtol=1e-5)


@pytest.mark.slow
def test_labelled_anomalies_are_never_scored_and_the_split_is_reproducible(
    small_synthetic, tmp_path
):
    config = fast_config(
        small_synthetic,
        **{"data.labelled_anomalies": 3, "data.categories": "disc", "eval.num_heatmaps": 0},
    )
    res = runner.train_and_evaluate(config, tmp_path / "a", progress=False)
    manifest = json.loads((tmp_path / "a" / "disc" / "labelled_anomalies.json").read_text())
    assert manifest == res["details"]["disc"]["labelled_anomalies"]
    chosen = {f["path"] for f in manifest["files"]}
    assert len(chosen) == 3 and {f["defect"] for f in manifest["files"]} == {
        "missing",
        "scratch",
        "stain",
    }
    scored = set(res["details"]["disc"]["image_scores"])
    assert not chosen & scored  # no labelled anomaly is ever scored
    assert len(scored) == 9 - 3 and res["details"]["disc"]["num_test_images"] == 6
    assert res["config"]["data"]["labelled_anomalies"] == 3
    # the same seed gives the same split (another workdir); another split seed another one
    again = runner.anomaly_manifest(config, small_synthetic, "disc")
    assert again == manifest
    other = fast_config(small_synthetic, **{"data.labelled_anomalies": 3, "data.split_seed": 1})
    assert runner.anomaly_manifest(other, small_synthetic, "disc")["files"] != manifest["files"]
    # part of the model's identity: a different split on the same workdir is refused
    assert runner.fit_signature(other) != runner.fit_signature(config)


@pytest.mark.slow
def test_export_round_trip_and_light_serving(trained, tmp_path):
    from export_testutil import check_export, check_light_serving

    _, workdir, _ = trained
    out = tmp_path / "disc.jax"
    header = check_export(workdir, "disc", out)
    assert header["preprocessing"]["crop"] == 96 and header["calibration"] is not None
    assert "dataset_licence" in header and header["backbone"]["random"] is True
    check_light_serving(out)


@pytest.mark.slow
def test_export_cli(trained, tmp_path):
    """``python -m jad.export`` (the command users run) writes a loadable, world-readable file;
    a workdir without a model is one line and exit 2."""
    import subprocess
    import sys

    from jad import serving

    _, workdir, _ = trained
    out = tmp_path / "cli.jax"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "jad.export",
            f"--workdir={workdir}",
            "--category=disc",
            f"--out={out}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert os.stat(out).st_mode & 0o044  # readable by others, as files open() creates
    assert serving.read(out)[0]["category"] == "disc"
    r = subprocess.run(
        [sys.executable, "-m", "jad.export", f"--workdir={tmp_path}", f"--out={tmp_path / 'x'}"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 2 and "no trained model" in r.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.slow  # a CLI subprocess end to end
def test_serving_cli_writes_what_predict_writes_on_raw_images(trained, tmp_path):
    """``python -m jad.serving detector.jax IMAGES --out=DIR`` on raw files of other sizes: the
    same predictions (scores within the export tolerance, same decisions), predicted masks and
    panels as ``python -m jad.predict`` on the same files, in a process where the training stack
    cannot be imported (only jax, numpy, Pillow)."""
    import subprocess
    import sys
    import time

    from export_testutil import REPO, raw_image_files
    from PIL import Image

    from jad.export import export_category

    config, workdir, _ = trained
    det = tmp_path / "disc.jax"
    export_category(workdir, "disc", det)
    raw = tmp_path / "raw"
    raw_image_files(Path(config.data.root) / "disc", raw, n=6)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    blocked = (
        "import sys, runpy\n"
        "for m in ('flax', 'optax', 'orbax', 'tensorflow_datasets', 'tensorflow', 'torch',\n"
        "          'grain', 'ml_collections', 'absl', 'sklearn', 'tqdm'):\n"
        "    sys.modules[m] = None\n"
        "sys.argv = ['jad.serving', *sys.argv[1:]]\n"
        "runpy.run_module('jad.serving', run_name='__main__')\n"
    )
    t0 = time.perf_counter()
    s = subprocess.run(
        [sys.executable, "-c", blocked, str(det), str(raw), f"--out={tmp_path / 's'}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    t_serving = time.perf_counter() - t0
    assert s.returncode == 0, s.stderr[-3000:]
    t0 = time.perf_counter()
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "jad.predict",
            f"--workdir={workdir}",
            "--category=disc",
            f"--images={raw}",
            f"--out={tmp_path / 'p'}",
        ],
        cwd=REPO,
        env={**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    t_predict = time.perf_counter() - t0
    assert p.returncode == 0, p.stderr[-3000:]
    served = json.loads((tmp_path / "s" / "predictions.json").read_text())
    predicted = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert served["calibration"] == predicted["calibration"]
    assert served["decision_rule"] == predicted["decision_rule"]
    a, b = served["predictions"], predicted["predictions"]
    assert [r["path"] for r in a] == [r["path"] for r in b] and len(a) == 6
    got = np.array([r["image_score"] for r in a])
    want = np.array([r["image_score"] for r in b])
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-6)
    for x, y in zip(a, b, strict=True):
        assert x["decision"] == y["decision"]
        assert abs(x["normalised_score"] - y["normalised_score"]) < 1e-3
        mx = np.asarray(Image.open(x["defect_mask"]))
        my = np.asarray(Image.open(y["defect_mask"]))
        assert mx.shape == my.shape == (96, 96) and np.mean(mx != my) < 0.01
        assert Path(x["heatmap"]).name == Path(y["heatmap"]).name
    print(
        f"\nserving vs predict on {len(a)} raw images: max |score diff| "
        f"{np.max(np.abs(got - want)):.3g} (relative {np.max(np.abs(got - want) / want):.3g}); "
        f"wall {t_serving:.1f} s vs {t_predict:.1f} s (whole processes, nice'd machine); "
        f"detector {det.stat().st_size / 2**20:.1f} MiB"
    )


def test_damaged_truncated_or_foreign_detector_is_one_sentence(trained, tmp_path):
    import subprocess
    import sys

    from export_testutil import REPO

    from jad import serving
    from jad.export import export_category

    _, workdir, _ = trained
    good = tmp_path / "good.jax"
    export_category(workdir, "disc", good)
    data = good.read_bytes()
    (n,) = struct.unpack("<Q", data[len(serving.MAGIC) : len(serving.MAGIC) + 8])
    body_at = len(serving.MAGIC) + 8 + n
    cases = {
        "truncated_header.jax": (data[: body_at - 10], "truncated"),
        "truncated_body.jax": (data[: body_at + (len(data) - body_at) // 2], "truncated"),
        "damaged_body.jax": (data[:-100] + bytes(100), "damaged"),
        "damaged_header.jax": (data[: body_at - 5] + b"\xff" * 5 + data[body_at:], "damaged"),
        "foreign.jax": (b"\x89PNG\r\n\x1a\n" + data[20:200], "not a jad detector"),
        "tiny.jax": (serving.MAGIC + b"\x01", "truncated"),
    }
    for name, (content, words) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(serving.DetectorError, match=words) as e:
            serving.load(tmp_path / name)
        assert "\n" not in str(e.value) and name in str(e.value)
    # a well-formed file whose body jax cannot read (no checksum to catch it first)
    header = serving.read(good)[0]
    for k in ("body_bytes", "body_sha256"):
        header.pop(k)
    (tmp_path / "garbage.jax").write_bytes(serving.pack(header, b"not a jax export"))
    with pytest.raises(serving.DetectorError, match="damaged or was written by an incompatible"):
        serving.load(tmp_path / "garbage.jax")
    with pytest.raises(serving.DetectorError, match="does not exist"):
        serving.load(tmp_path / "missing.jax")
    det = serving.load(good)
    with pytest.raises(serving.DetectorError, match="uint8"):
        det(np.zeros((2, 50, 60, 3), np.float64))
    with pytest.raises(serving.DetectorError, match="cannot decode"):
        det([str(tmp_path / "foreign.jax")])
    for name in ("truncated_body.jax", "foreign.jax", "missing.jax"):
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "jad.serving",
                str(tmp_path / name),
                str(REPO / "README.md"),
                f"--out={tmp_path / 'o'}",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
        assert r.returncode == 2 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
