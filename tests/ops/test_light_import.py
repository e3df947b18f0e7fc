"""`import jad.ops` must work without Flax, optax, TFDS, torch or PIL."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CODE = """
import sys
for name in ("flax", "optax", "tensorflow_datasets", "tensorflow", "torch", "PIL", "orbax",
             "grain", "sklearn", "scipy", "faiss"):
    sys.modules[name] = None  # any import of these now raises ImportError
import numpy as np
import jad.ops as ops
d, i = ops.knn(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32))
assert i[:, 0].tolist() == [0, 1, 2]
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("flax", "optax", "torch", "PIL")
             and sys.modules[m] is not None)
assert not bad, bad
print("ok")
"""


def test_jad_ops_imports_without_heavy_deps():
    out = subprocess.run(
        [sys.executable, "-c", CODE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")
