"""PBAS on VisA (paper Table III, averages only; shared/specs/pbas.md §10) next to jad's run.

    python experiments/pbas_visa.py --data_root=/path/to/visa \
        --weights=weights/wrn50_v1 --workdir=runs/experiments/pbas_visa
    python experiments/pbas_visa.py --synthetic      # smoke run on generated data, NOT comparable

Writes <workdir>/results.md and results.json; the jad run itself lives in <workdir>/run/ (rerun
the same command to resume or restore). Any ``--config.a.b=value`` override of jad.train works.
"""

import pbas_paper
from common import main

TABLE = pbas_paper.table(
    "visa",
    title="PBAS, VisA (WRN-50, 288 px, last epoch)",
    source="the PBAS paper, Table III (averages only)",
    metrics=("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "aupro"),
    published="mean 97.7 98.1 98.6 47.6 93.3",
    per_class=False,
    settings_detail="VisA masks resized bilinearly and binarised > 0",
)

if __name__ == "__main__":
    raise SystemExit(main(TABLE))
