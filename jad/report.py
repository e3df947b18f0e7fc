"""Write the evaluation report of a workdir: ``python -m jad.report --workdir=runs/patchcore_synthetic``.

Writes ``<workdir>/report.html``: one self-contained file (plots and images inline, no network)
with the run, the metrics table and the calibrated decisions, per category the score histograms,
ROC / PR / PRO curves, the confusion matrix at the threshold and galleries of the worst and the
clearest images, and a trainer's losses. ``jad.train`` and ``jad.evaluate`` write it at the end
(``--report=false`` to skip). It reads what they saved and runs no model.
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from jad.train_lib import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A folder written by jad.train.", required=True)


def main(argv: list[str]) -> int:
    del argv
    from jad.train_lib import report_html

    path = report_html.build(Path(_WORKDIR.value))
    print(f"report: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    cli.run(main, needs_config=False)
