"""PBAS on MPDD (paper Table IV, averages only; shared/specs/pbas.md §10) next to jad's run.

    python experiments/pbas_mpdd.py --data_root=/path/to/mpdd \
        --weights=weights/wrn50_v1 --workdir=runs/experiments/pbas_mpdd
    python experiments/pbas_mpdd.py --synthetic      # smoke run on generated data, NOT comparable

Writes <workdir>/results.md and results.json; the jad run itself lives in <workdir>/run/ (rerun
the same command to resume or restore). Any ``--config.a.b=value`` override of jad.train works.
"""

import pbas_paper
from common import main

TABLE = pbas_paper.table(
    "mpdd",
    title="PBAS, MPDD (WRN-50, 288 px, last epoch)",
    source="the PBAS paper, Table IV (averages only)",
    metrics=("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "aupro"),
    published="mean 97.7 98.0 98.8 37.8 97.1",
    per_class=False,
)

if __name__ == "__main__":
    raise SystemExit(main(TABLE))
