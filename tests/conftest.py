"""Test-wide setup: 8 simulated CPU devices (must happen before jax initialises a backend)."""

import os

_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO.parent / "shared" / "golden"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """`../shared/golden` (official PyTorch outputs); tests using it skip visibly if it is absent."""
    if not (GOLDEN / "make_inputs.py").exists():
        pytest.skip(f"golden reference folder not found at {GOLDEN}")
    return GOLDEN


@pytest.fixture(scope="session")
def make_inputs(golden_dir):
    """The golden folder's numpy/pillow generator of weights, images and preprocessing."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "golden_make_inputs", golden_dir / "make_inputs.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
