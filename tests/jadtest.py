"""Helpers every test module may import (``tests/`` is on ``sys.path``: see tests/conftest.py).

``need(...)``: a test's external requirement (an optional package, ``../shared`` data). On a
developer's clone a missing one skips with a reason that says where to get it; under ``CI=true``
it fails instead, so CI cannot pass by skipping what it must run.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GOLDEN = SHARED / "golden"
SPECS = SHARED / "specs"

IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def missing(reason: str):
    """Skip (a developer's clone) or fail (``CI=true``) because ``reason`` is missing."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: this test must run in CI)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def need(module: str, install: str = "pip install -e '.[test]'") -> ModuleType:
    """``import module`` or :func:`missing` (usable at module level, like ``importorskip``)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        missing(f"needs the '{module}' package ({install})")


def need_dir(path: Path, what: str) -> Path:
    """``path`` if it exists, else :func:`missing` naming it."""
    if not path.is_dir():
        missing(f"{what} not found at {path} (it lives in the shared/ folder beside the clone)")
    return path


def seed_from_env(name: str, default_fn) -> int:
    """A test's random choice, replayable: ``$name`` if set, else ``default_fn()``; the caller
    prints it (pytest shows the output of a failing test)."""
    raw = os.environ.get(name)
    return int(raw) if raw else int(default_fn())


def with_overrides(c, overrides: dict):
    """``c`` with dotted-key overrides applied in place (``{"train.epochs": 3}``); returns ``c``."""
    for k, v in overrides.items():
        node = c
        *parents, leaf = k.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = v
    return c


def config_file(method: str, arg: str | None = "tiny"):
    """``configs/<method>_synthetic.py``'s ``get_config(arg)``: the one tiny configuration of a
    method that every test starts from (``--config=configs/<method>_synthetic.py:tiny`` in the
    subprocess tests)."""
    import importlib.util

    path = REPO / "configs" / f"{method}_synthetic.py"
    spec = importlib.util.spec_from_file_location(f"jad_test_config_{method}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(arg)


def tiny_config(method: str, root=None, **overrides):
    """The tiny config of ``method`` on the data at ``root``, with dotted-key ``overrides``."""
    c = config_file(method)
    if root is not None:
        c.data.root = str(root)
    return with_overrides(c, overrides)
