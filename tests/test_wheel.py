"""The wheel works away from the repository: configs by name, jad.ops without the training stack.

Builds the wheel from a copy of the packaged sources, installs it (``--no-deps``) into a fresh
virtualenv that sees this environment's site-packages (jax, flax, ... without downloads), and
runs from a temporary directory that holds no repository.
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

IMPORT_OPS = """
import sys
import jad, jad.ops as ops
import numpy as np
d, i = ops.knn(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32))
assert i[:, 0].tolist() == [0, 1, 2]
heavy = ("flax", "optax", "orbax", "tensorflow_datasets", "tensorflow", "torch", "grain")
print("jad", jad.__file__)
print("heavy", sorted({m.split(".")[0] for m in sys.modules} & set(heavy)))
"""


def _run(cmd, cwd, env, timeout=300):
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{cmd}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_repository(tmp_path, small_synthetic):
    src = tmp_path / "src"
    src.mkdir()
    for f in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / f, src / f)
    for d in ("jad", "configs"):
        shutil.copytree(REPO / d, src / d, ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
    env["JAX_PLATFORMS"] = "cpu"
    wheels = tmp_path / "wheels"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    _run([*pip_wheel, "-w", str(wheels), str(src)], tmp_path, env)
    (wheel,) = wheels.glob("jad-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    packaged = {str(p.relative_to(REPO)) for p in (REPO / "jad").rglob("*.py")}
    packaged |= {f"jad/{p.relative_to(REPO)}" for p in (REPO / "configs").glob("*.py")}
    assert packaged <= names, sorted(packaged - names)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], tmp_path, env)
    py = str(venv / "bin" / "python")
    _run([py, "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], tmp_path, env)

    away = tmp_path / "elsewhere"  # no repository, no jad source: only the wheel can answer
    away.mkdir()
    out = _run([py, "-c", IMPORT_OPS], away, env)
    print(out)
    where = Path(out.split("jad ", 1)[1].splitlines()[0])
    assert where.is_relative_to(venv) and not where.is_relative_to(REPO), where
    assert "heavy []" in out

    workdir = away / "run"
    overrides = [
        f"--config.data.root={small_synthetic}",
        "--config.data.categories=disc",
        "--config.data.resize=64",
        "--config.data.crop=64",
        "--config.data.batch_size=4",
        "--config.eval.num_heatmaps=0",
        "--config.patchcore.coreset_ratio=0.25",
    ]
    train = [py, "-m", "jad.train", "--config=patchcore_synthetic", f"--workdir={workdir}"]
    out = _run([*train, "--quiet", *overrides], away, env, timeout=600)
    print(out)
    results = json.loads((workdir / "results.json").read_text())
    assert set(results["metrics"]) == {"disc", "mean"}
    assert f"results: {workdir / 'results.json'}" in out
