"""Fit a method and evaluate it: ``python -m jad.train --config=configs/<method>_<data>.py --workdir=DIR``.

``--config`` also takes a shipped config's name (``--config=pbas_mvtec``; ``jad.config_files``).

For PatchCore "train" = build the memory bank. Overrides: ``--config.data.categories=bottle,cable``,
``--config.backbone.weights=weights/wrn50_v1``, any ``--config.a.b=value``. Writes a checkpoint per
category, heatmaps, ``metrics.{json,csv}``, ``results.json`` and ``report.html`` (``jad.report``;
``--report=false`` skips it) under the workdir.
"""

from __future__ import annotations

from pathlib import Path

from absl import flags
from ml_collections import config_flags

from jad.train_lib import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "A config file (configs/patchcore_synthetic.py) or a shipped config's name (patchcore_synthetic).",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (default: runs/<config name>).")
_QUIET = flags.DEFINE_bool("quiet", False, "No progress bars.")
_REPORT = flags.DEFINE_bool("report", True, "Write <workdir>/report.html at the end (jad.report).")


def main(argv: list[str]) -> int:
    del argv
    from jad.train_lib import runner

    config = _CONFIG.value
    workdir = Path(
        _WORKDIR.value or Path("runs") / Path(flags.FLAGS["config"].config_filename).stem
    )
    command = f"python -m jad.train --config={flags.FLAGS['config'].config_filename}"
    results = runner.train_and_evaluate(config, workdir, progress=not _QUIET.value, command=command)
    print(runner.format_results(results))
    t = results["timings"]
    print(f"\nresults: {workdir / 'results.json'}  (total {t['total_s']:.1f} s)")
    for cat, d in results["details"].items():
        if "heatmaps" in d:
            print(f"heatmaps [{cat}]: {d['heatmaps']}")
    if _REPORT.value and (report := runner.write_report(workdir)) is not None:
        print(f"report: {report}")  # process 0 writes it
    return 0


if __name__ == "__main__":
    cli.run(main, needs_config=True)
