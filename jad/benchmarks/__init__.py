"""Benchmark implementations behind ``python -m jad.benchmark``."""

import os


def child_env() -> dict[str, str]:
    """``os.environ`` with the folder that holds this ``jad`` first on ``PYTHONPATH``, so a child
    ``python -m jad...`` runs the same jad as its parent from any working directory (a checkout
    or an installed wheel)."""
    import jad

    root = os.path.dirname(os.path.dirname(os.path.abspath(jad.__file__)))
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}
