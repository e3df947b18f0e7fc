"""Configs resolve by name as well as by path (jad.config_files), from any directory."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jad import config_files
from jad.utils.errors import UserError

REPO = Path(__file__).resolve().parents[1]
NAMES = sorted(p.stem for p in (REPO / "configs").glob("*.py") if p.stem != "__init__")


def test_the_checkout_uses_its_own_configs_folder():
    assert config_files.shipped_dir() == REPO / "configs"
    assert config_files.available() == NAMES and "pbas_mvtec" in NAMES


@pytest.mark.parametrize(
    "spec", ["pbas_mvtec", "pbas_mvtec.py", "configs/pbas_mvtec.py", "jad/configs/pbas_mvtec.py"]
)
def test_names_resolve_from_another_directory(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config_files.resolve(spec) == str(REPO / "configs" / "pbas_mvtec.py")
    assert config_files.resolve(spec + ":arg") == str(REPO / "configs" / "pbas_mvtec.py") + ":arg"


def test_an_existing_path_wins(tmp_path, monkeypatch):
    own = tmp_path / "configs" / "pbas_mvtec.py"
    own.parent.mkdir()
    own.write_text("def get_config():\n    return None\n")
    monkeypatch.chdir(tmp_path)
    assert config_files.resolve("configs/pbas_mvtec.py") == "configs/pbas_mvtec.py"
    assert config_files.resolve(str(own)) == str(own)


@pytest.mark.parametrize("spec", ["nope", "configs/nope.py", "elsewhere/pbas_mvtec.py"])
def test_unknown_names_list_the_shipped_ones(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="does not exist") as e:
        config_files.resolve(spec)
    assert ", ".join(NAMES) in str(e.value) and "\n" not in str(e.value)


def test_load_by_name():
    c = config_files.load("proxycore_synthetic")
    assert c.method == "proxycore" and c.data.name == "synthetic"


def test_train_cli_takes_a_name_and_reports_an_unknown_one_in_one_line(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    run = lambda *a: subprocess.run(
        [sys.executable, "-m", "jad.train", *a],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    bad = run("--config=patchcore_nope")
    errors = [ln for ln in bad.stderr.splitlines() if ln.startswith("error:")]
    assert bad.returncode != 0 and len(errors) == 1 and "Traceback" not in bad.stderr
    assert (
        "config 'patchcore_nope' does not exist" in errors[0] and "patchcore_synthetic" in errors[0]
    )
    # a name reaches the config: an unknown override key is reported against the shipped file
    key = run("--config=patchcore_synthetic", "--config.patchcore.zzz=3")
    assert "unknown config key 'patchcore.zzz' in patchcore_synthetic.py" in key.stderr, key.stderr
