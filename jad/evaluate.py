"""Re-evaluate a trained workdir: ``python -m jad.evaluate --workdir=DIR [--categories=a,b]``.

Prints the metrics table (I-AUROC, P-AUROC, AU-PRO, F1-max, AP per category and mean) and writes
``eval_results.json`` and ``eval_metrics.{json,csv}`` into the workdir.
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from jad.train_lib import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A folder written by jad.train.", required=True)
_CATEGORIES = flags.DEFINE_list(
    "categories", [], "Subset of the workdir's categories (default: all)."
)
_QUIET = flags.DEFINE_bool("quiet", False, "No progress bars.")
_REPORT = flags.DEFINE_bool("report", True, "Write <workdir>/report.html at the end (jad.report).")


def main(argv: list[str]) -> int:
    del argv
    from jad.train_lib import runner

    out = runner.evaluate_workdir(
        Path(_WORKDIR.value), categories=_CATEGORIES.value or None, progress=not _QUIET.value
    )
    print(runner.format_results(out))
    print(
        f"\nwritten: {Path(_WORKDIR.value) / 'eval_results.json'}, eval_metrics.json, eval_metrics.csv"
    )
    if _REPORT.value and (report := runner.write_report(Path(_WORKDIR.value))) is not None:
        print(f"report: {report}")  # process 0 writes it
    return 0


if __name__ == "__main__":
    cli.run(main, needs_config=False)
