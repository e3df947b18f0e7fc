"""``python -m jad.env``: the environment report users paste into issues."""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_env_report_lists_devices_versions_isa_and_flags():
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_TRACEBACK_FILTERING": "off", "XLA_FLAGS": ""}
    run = lambda *a: subprocess.run(
        [sys.executable, "-m", "jad.env", *a],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    r = run("--json")
    assert r.returncode == 0, r.stderr[-2000:]
    info = json.loads(r.stdout)
    assert info["devices"] == [{"platform": "cpu", "kind": "cpu", "id": 0}]
    assert info["versions"]["jax"] and info["versions"]["numpy"]
    assert info["cpu_isa"] or platform.machine() not in ("x86_64", "AMD64")  # at least sse4_2
    assert info["env"]["JAX_TRACEBACK_FILTERING"] == "off"
    assert info["default_vs_highest_matmul_rel_diff"] < 1e-5  # CPUs compute float32 exactly
    text = run()
    assert text.returncode == 0 and "default_vs_highest_matmul_rel_diff" in text.stdout
    bad = run("--nope")
    assert bad.returncode == 2 and "usage" in bad.stderr
