"""Published numbers beside a run's, for the report: the reproduction scripts' own tables.

``experiments/<method>_<dataset>.py`` holds each paper table (transcribed from ``shared/specs``)
and ``experiments/common.py`` the one comparison (``compare``: jad beside every reference, Δ, what
is not comparable and why). The report reuses both rather than keeping a second copy of the
numbers; they exist in a source checkout only (the installed package does not ship
``experiments/``), and the report says so when they are absent.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
_SIBLINGS = ("common", "proxycore_logs")  # modules the scripts import by their bare names


def comparison(results: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """(``common.compare``'s output for this run, a sentence) or (None, why there is none).

    Runs with random backbone weights are compared in the scripts' synthetic mode: every Δ is
    then marked not comparable.
    """
    method, dataset = str(results.get("method")), str(results.get("dataset"))
    script = EXPERIMENTS / f"{method}_{dataset}.py"
    if not script.is_file():
        where = (
            "this installation has no experiments/ folder"
            if not EXPERIMENTS.is_dir()
            else (f"experiments/ has no script for {method} on {dataset}")
        )
        return None, f"No published numbers: {where}."
    saved_path = list(sys.path)
    saved = {k: sys.modules.get(k) for k in _SIBLINGS}
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        spec = importlib.util.spec_from_file_location(f"_jad_experiments_{script.stem}", script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        common = sys.modules["common"]
        random = bool(results.get("backbone", {}).get("random"))
        return (
            common.compare(module.TABLE, results, synthetic=random),
            f"Published numbers from experiments/{script.name} (transcribed from shared/specs).",
        )
    except Exception as e:  # noqa: BLE001 - an annotation; a broken script must not cost the report
        return None, f"No published numbers: experiments/{script.name} failed: {e}"
    finally:
        sys.path[:] = saved_path
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
