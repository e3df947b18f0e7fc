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


@pytest.fixture(scope="session")
def small_synthetic(tmp_path_factory):
    """A small generated synthetic set shared by the method, CLI and multi-host tests: 96 px
    images, 6 train, 3 good + 3 x 2 defective test images per category."""
    from jad.data import synthetic

    root = tmp_path_factory.mktemp("synthetic") / "data"
    return synthetic.generate(root, seed=0, image_size=96, n_train=6, n_test_good=3, n_per_defect=2)
