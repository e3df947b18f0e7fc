"""experiments/: every reproduction script runs end to end on the small synthetic set (so none can
rot), the table writer puts the published numbers beside jad's and marks what is missing or not
comparable, and the transcribed numbers match shared/specs."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from jadtest import need_dir

from jad.utils.errors import UserError

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = REPO / "experiments"
SPECS = REPO.parent / "shared" / "specs"
sys.path.insert(0, str(EXPERIMENTS))  # the scripts import their siblings (common, proxycore_logs)

import common  # noqa: E402

SCRIPTS = sorted(
    p.stem for p in EXPERIMENTS.glob("*.py") if "\nTABLE = " in p.read_text() and p.stem != "common"
)

# The smallest runs that still go through every stage of a script: 1 category, 64 px, the tiny
# configs' random resnet_tiny and feature / head sizes (tiny_model), one epoch / one step, no
# heatmaps, no TensorBoard, no calibration holdout. (jad's own behaviour is tested in
# tests/methods.)
TINY = [
    "--config.data.resize=64",
    "--config.data.crop=64",
    "--config.data.batch_size=16",  # the 9 test images in one batch: one compiled shape
    "--config.data.use_tfds=False",
    "--config.eval.num_heatmaps=0",
    "--config.calibration.holdout=0",
]
_TINY_MODEL_KEYS = {  # besides backbone.arch and <section>.{pretrain,target}_embed_dim
    "pbas": ["pbas.dsc_hidden"],
    "proxycore": ["proxycore.hidden", "proxycore.out"],
}


def tiny_model(method: str) -> list[str]:
    """The backbone and feature / head sizes of ``method``'s tiny config
    (``jad.config_base.tiny``) as flags over a script's own config."""
    from jad import config_base

    c = config_base.tiny(getattr(config_base, method)())
    section = "patchcore" if method == "apc" else method
    keys = ["backbone.arch", f"{section}.pretrain_embed_dim", f"{section}.target_embed_dim"]
    flags = []
    for key in keys + _TINY_MODEL_KEYS.get(method, []):
        value = c
        for part in key.split("."):
            value = value[part]
        flags.append(f"--config.{key}={value}")
    return flags


TRAINER = ["--config.train.tensorboard=False", "--config.train.num_tb_heatmaps=0"]
# Per method; the scripts of one method then share one fitted model: the values in which their
# config files differ (mask path, per-category resize, temperature) are set alike, so the first
# script trains and the others restore it from the same workdir and evaluate (jad.train's rerun).
TINY_METHOD = {
    "patchcore": [],
    "pbas": [
        *TRAINER,
        "--config.train.epochs=1",
        "--config.train.batch_size=4",
        "--config.data.mask_mode=nearest",
        "--config.data.category_resize=",
    ],
    "proxycore": [
        *TRAINER,
        "--config.train.epochs=1",
        "--config.train.batch_size=128",
        "--config.proxycore.temperature=0.1",
    ],
    "apc": [
        *TRAINER,
        "--config.data.labelled_anomalies=2",
        "--config.apc.decoder_width=0.25",
        "--config.apc.train_from=layer4",  # the smallest backward pass: ~30 % less compile time
        "--config.apc.anomalous_batch=2",
        "--config.apc.warmup_steps=1",
        "--config.train.batch_size=2",
        "--config.train.steps=1",
    ],
}


def load(name: str):
    return importlib.import_module(name)


def test_every_method_dataset_table_has_a_script():
    """The paper tables of shared/specs: PatchCore (MVTec AD; VisA / MPDD against the baseline the
    ProxyCore repository logged), PBAS and ProxyCore on all three, APC on MVTec AD only."""
    expected = {
        f"{m}_{d}" for m in ("patchcore", "pbas", "proxycore") for d in ("mvtec", "visa", "mpdd")
    }
    assert set(SCRIPTS) == expected | {"apc_mvtec"}
    for name in SCRIPTS:
        table = load(name).TABLE
        assert (table.name, f"{table.method}_{table.dataset}") == (name, name)
        assert table.protocol and (table.references or table.no_reference)


# APC's one training step costs ~75 s of CPU on its own (the trainer's init and step compile), the
# other methods' three scripts together 15-30 s: all in the whole suite, none in the fast tier.
METHODS = sorted({name.split("_")[0] for name in SCRIPTS})


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_scripts_run_end_to_end_on_the_synthetic_set(method, small_synthetic, tmp_path, capsys):
    """Every script of ``method`` (MVTec AD first) through its ``main``: its config file, the
    synthetic swap, jad's runner (the first script fits, the others restore that model), the
    comparison and both result files. Nothing here may be skipped: a script that rots fails."""
    workdir = tmp_path / method
    names = sorted(
        (n for n in SCRIPTS if n.startswith(f"{method}_")), key=lambda n: "mvtec" not in n
    )
    for i, name in enumerate(names):
        check_script(load(name).TABLE, workdir, small_synthetic, capsys, restored=i > 0)


def _mtimes(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def check_script(table, workdir, data_root, capsys, *, restored):
    argv = [
        "--synthetic",
        f"--data_root={data_root}",
        f"--workdir={workdir}",
        "--categories=disc",
        "--quiet",
        *TINY,
        *TINY_METHOD[table.method],
        *tiny_model(table.method),
    ]
    model = workdir / "run" / "disc" / "checkpoint"
    before = _mtimes(model)
    assert common.main(table, argv) == 0
    out = capsys.readouterr()
    assert common.SYNTHETIC_WARNING in out.out and common.SYNTHETIC_WARNING in out.err
    after = _mtimes(model)
    assert after and (after == before) == restored  # restored = the saved model left untouched

    written = json.loads((workdir / "results.json").read_text())
    md = (workdir / "results.md").read_text()
    jad_run = json.loads((workdir / "run" / "results.json").read_text())
    assert written["script"] == f"experiments/{table.name}.py" and written["title"] == table.title
    assert written["run"]["config_file"] == f"configs/{table.name}.py"
    assert written["synthetic"] and written["warning"] == common.SYNTHETIC_WARNING
    assert written["categories"] == ["disc"] and jad_run["backbone"]["random"]
    assert jad_run["dataset"] == "synthetic" and jad_run["config"]["data"]["resize"] == 64
    assert f"**{common.SYNTHETIC_WARNING}**" in md and md in out.out
    for comp in written["comparisons"]:
        for metric in comp["metrics"]:
            jad = comp["rows"]["disc"][metric]["jad"]
            assert jad == pytest.approx(100 * jad_run["metrics"]["disc"][metric])
            assert math.isfinite(jad) and 0 <= jad <= 100
            mean = comp["rows"]["mean"][metric]
            # never a Δ on synthetic data; the published mean (when there is one) still shown
            assert mean["delta"] is None and comp["rows"]["disc"][metric]["delta"] is None
            if mean["published"] is not None:
                assert mean["status"].startswith("not comparable")
        section = md.split(f"## vs {comp['source']}\n", 1)[1].split("\n## ", 1)[0]
        mean_row = next(ln for ln in section.splitlines() if ln.startswith("| **mean**"))
        for metric in comp["metrics"]:
            published = comp["rows"]["mean"][metric]["published"]
            jad = f"{comp['rows']['mean'][metric]['jad']:.2f}"
            assert f"| {jad} | {published or common.NO_PUBLISHED} | " in mean_row
    # the protocol paragraph states the reported model, the weights and the anomaly split
    protocol = written["protocol"]
    assert "Reported model: " + str(jad_run["protocol"]) in protocol
    assert "RANDOM initialisation" in protocol and "Synthetic mode:" in protocol
    if table.method == "apc":
        assert "Labelled anomalies: 2 defective test images per category" in protocol
        manifest = jad_run["details"]["disc"]["labelled_anomalies"]
        assert manifest["n"] == 2 and len(manifest["files"]) == 2
    else:
        assert "Labelled anomalies: none" in protocol
    if table.method != "patchcore":
        assert jad_run["protocol"].startswith("last step") and "(reported step: " in protocol
    if table.no_reference:
        assert f"no published number: {table.no_reference}" in out.out


def _fake_results(categories, values):
    """jad's results.json shape: fractions per category + the mean (None if any is None)."""
    metrics = {c: dict(values[c]) for c in categories}
    keys = values[categories[0]]
    column = {k: [metrics[c][k] for c in categories] for k in keys}
    metrics["mean"] = {k: None if None in v else sum(v) / len(v) for k, v in column.items()}
    return {"metrics": metrics}


TOY = common.Table(
    name="toy_mvtec",
    method="patchcore",
    dataset="mvtec",
    title="Toy",
    metrics=("image_auroc", "aupro"),
    references=(
        common.Reference(
            source="paper",
            metrics=("image_auroc", "aupro"),
            rows=common.rows("bottle 99.5 - \n mean 99.0 93.5"),
            not_comparable={"aupro": "another PRO"},
            labels={"aupro": "PRO"},
        ),
    ),
    protocol="toy protocol",
)


def test_table_writer_puts_published_beside_jad_and_marks_the_missing():
    results = _fake_results(
        ["bottle", "cable"],
        {
            "bottle": {"image_auroc": 0.99, "aupro": 0.9},
            "cable": {"image_auroc": 0.97, "aupro": None},
        },
    )
    comp = common.compare(TOY, results, synthetic=False)
    rows = comp["comparisons"][0]["rows"]
    assert not comp["complete"]
    assert rows["bottle"]["image_auroc"] == {
        "jad": pytest.approx(99.0),
        "published": "99.5",
        "delta": pytest.approx(-0.5),
        "status": "ok",
    }
    assert rows["bottle"]["aupro"]["status"] == "no published number"  # "-" in the source
    assert rows["cable"]["image_auroc"]["status"] == "no published number"  # no row at all
    assert rows["cable"]["aupro"]["jad"] is None
    # 2 of 15 categories: the published mean is over all 15, so no Δ
    assert rows["mean"]["image_auroc"]["published"] == "99.0"
    assert rows["mean"]["image_auroc"]["delta"] is None
    assert rows["mean"]["image_auroc"]["status"] == f"not comparable: {common.SUBSET_NOTE}"

    md = common.render_markdown(comp, "the protocol")
    lines = md.splitlines()
    assert "| category | I-AUROC jad | I-AUROC pub. | Δ | AU-PRO jad | PRO pub. | Δ |" in lines
    assert "| bottle | 99.00 | 99.5 | -0.50 | 90.00 | n/p | – |" in lines
    assert "| cable | 97.00 | n/p | – | n/a | n/p | – |" in lines
    assert "| **mean** (2) | 98.00 | 99.0 | n/c | n/a | 93.5 | n/a |" in lines
    assert (
        "- AU-PRO: not comparable, another PRO" in lines
        and "- mean: " + common.SUBSET_NOTE in lines
    )
    assert common.LEGEND in lines and md.endswith("## Protocol\n\nthe protocol\n")


def test_table_writer_all_categories_gives_the_mean_delta_and_respects_not_comparable():
    from jad.data import KNOWN_CATEGORIES

    cats = list(KNOWN_CATEGORIES["mvtec"])
    results = _fake_results(cats, {c: {"image_auroc": 0.98, "aupro": 0.95} for c in cats})
    rows = common.compare(TOY, results, synthetic=False)["comparisons"][0]["rows"]
    assert rows["mean"]["image_auroc"]["delta"] == pytest.approx(-1.0)
    assert rows["mean"]["aupro"]["delta"] is None
    assert rows["mean"]["aupro"]["status"] == "not comparable: another PRO"
    synthetic = common.compare(TOY, results, synthetic=True)["comparisons"][0]["rows"]
    assert synthetic["mean"]["image_auroc"]["delta"] is None


def test_no_published_number_is_said_not_invented():
    table = common.Table(
        name="toy_visa",
        method="patchcore",
        dataset="visa",
        title="Toy",
        metrics=("image_auroc",),
        no_reference="the paper reports MVTec AD only",
    )
    comp = common.compare(
        table, _fake_results(["candle"], {"candle": {"image_auroc": 0.9}}), synthetic=False
    )
    (only,) = comp["comparisons"]
    assert comp["no_published_number"] == "the paper reports MVTec AD only"
    assert not only["published"] and only["source"].startswith("no published number")
    assert all(cell["published"] is None for row in only["rows"].values() for cell in row.values())
    md = common.render_markdown(comp, "p")
    assert "**No published number**: the paper reports MVTec AD only" in md
    assert "| candle | 90.00 | n/p | – |" in md.splitlines()


def test_reference_rejects_a_bad_transcription():
    with pytest.raises(ValueError):
        common.rows("bottle 99.l")
    with pytest.raises(AssertionError, match="2 values for 3 metrics"):
        common.Reference("x", ("image_auroc", "pixel_auroc", "aupro"), common.rows("mean 1 2"))


def test_config_building_overrides_and_the_missing_config_fallback():
    table = load("apc_mvtec").TABLE
    visa = dataclasses.replace(table, name="apc_visa", dataset="visa")
    built = common.build_config(
        visa, data_root="/d", weights="/w", categories="candle", synthetic=False,
        overrides=["--config.train.steps=7", "--config.apc.augment=none"],
    )  # fmt: skip
    c = built.config
    assert built.config_file.name == "apc_mvtec.py" and "no configs/apc_visa.py" in built.notes[0]
    assert (c.data.name, c.data.root, c.data.categories) == ("visa", "/d", "candle")
    assert (c.backbone.weights, c.train.steps, c.apc.augment) == ("/w", 7, "none")
    with pytest.raises(UserError, match="unknown config key 'apc.zzz'"):
        common.build_config(
            table, data_root="/d", weights="/w", categories=None, synthetic=False,
            overrides=["--config.apc.zzz=1"],
        )  # fmt: skip
    # synthetic: the demo values of configs/pbas_synthetic.py, except what the user set
    pbas = load("pbas_mvtec").TABLE
    built = common.build_config(
        pbas, data_root=None, weights="/ignored", categories=None, synthetic=True,
        overrides=["--config.train.epochs=2"],
    )  # fmt: skip
    c = built.config
    assert (c.data.name, c.data.root, c.backbone.weights) == ("synthetic", "", "random")
    assert (c.data.resize, c.data.synthetic_mode, c.train.epochs) == (128, "hard", 2)


def test_missing_data_or_weights_is_one_error_line(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    script = str(EXPERIMENTS / "pbas_visa.py")
    p = subprocess.run(
        [sys.executable, script], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert p.returncode == 2 and p.stderr.startswith("error: missing --data_root=/path/to/visa")
    assert "Traceback" not in p.stderr
    p = subprocess.run(
        [sys.executable, script, f"--data_root={tmp_path}"], capture_output=True, text=True, env=env
    )
    assert p.returncode == 2 and "python -m jad.convert" in p.stderr.splitlines()[-1]


def test_transcribed_numbers_are_in_the_specs():
    """Each reference row's values stand together on one line of shared/specs (with the category
    name unless the row is the mean), so a typo in a script fails here."""
    need_dir(SPECS, "the method specs (shared/specs)")
    lines = [ln for p in sorted(SPECS.glob("*.md")) for ln in p.read_text().splitlines()]
    checked = 0
    for name in SCRIPTS:
        for ref in load(name).TABLE.references:
            for row, values in ref.rows.items():
                wanted = [re.compile(rf"(?<![\d.]){re.escape(v)}(?![\d.]*\d)") for v in values if v]
                assert any(
                    (row == "mean" or row in ln) and all(w.search(ln) for w in wanted)
                    for ln in lines
                ), f"{name}: {ref.source}: row {row} {values} not found in {SPECS}"
                checked += 1
    assert checked > 90
