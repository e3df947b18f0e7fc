"""Test-wide setup: 8 simulated CPU devices (must happen before jax initialises a backend)."""

import os

_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# One persistent XLA compilation cache per test session, shared by every process of the session
# (pytest-xdist workers inherit the environment, and so do the CLI subprocesses: jad.train,
# jad.predict, the multi-host pairs), so a program compiled once is loaded, not recompiled, by the
# next process that needs it. A fresh folder each session: never shared across jaxlib versions or
# machines. The key covers the HLO, the compile options, XLA_FLAGS and the devices, so the
# AVX2-capped rerun and the 1-vs-8-device tests compile their own programs. Set
# JAX_COMPILATION_CACHE_DIR yourself to keep one (or to "" to turn it off and compile everything).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    _cache = tempfile.mkdtemp(prefix="jad-tests-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
if os.environ["JAX_COMPILATION_CACHE_DIR"]:
    # tiny programs too (the default skips compiles under 1 s; most of the suite's are small)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    # No size cap: a cap turns on jax's eviction, which locks the folder and scans every entry on
    # each write (measured: with ~4,000 entries the workers spent most of their time there). A
    # half-written entry read by another process fails to decompress; jax then warns and compiles.

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from jadtest import GOLDEN, need_dir  # noqa: E402


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """`../shared/golden` (official PyTorch outputs): absent, its tests skip on a developer's clone
    and fail under CI=true (jadtest.missing)."""
    return need_dir(GOLDEN, "the golden reference folder (official PyTorch outputs)")


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


# Heaviest test modules first: with pytest-xdist (`-n auto`, `--dist=loadfile
# --no-loadscope-reorder` in pyproject.toml) each module runs whole on one worker, and a worker
# takes the next module as it frees up, so starting the long ones first keeps the workers'
# finishing times close (longest-first). Weights: seconds per module of the whole suite on 2 cores
# (approximate; only the order matters). Modules not listed keep their collection order, after.
_WEIGHT = {
    "test_multihost.py": 330,
    "test_apc.py": 150,
    "test_pbas.py": 80,
    "test_proxycore.py": 75,
    "test_experiments.py": 50,
    "test_torch_apc.py": 45,
    "test_cli.py": 20,
    "test_torch_pbas.py": 20,
    "test_wheel.py": 20,
    "test_bench_all.py": 18,
    "test_patchcore_e2e.py": 15,
    "test_sharded.py": 13,
}


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: -_WEIGHT.get(item.path.name, 0))  # stable: modules stay whole
