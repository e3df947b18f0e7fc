"""PBAS on MVTec AD (paper Tables I and II; shared/specs/pbas.md §10) next to jad's run.

    python experiments/pbas_mvtec.py --data_root=/path/to/mvtec_anomaly_detection \
        --weights=weights/wrn50_v1 --workdir=runs/experiments/pbas_mvtec
    python experiments/pbas_mvtec.py --synthetic      # smoke run on generated data, NOT comparable

Writes <workdir>/results.md and results.json; the jad run itself lives in <workdir>/run/ (rerun
the same command to resume or restore). Any ``--config.a.b=value`` override of jad.train works.
"""

import pbas_paper
from common import main

# class  I-AUROC (Table I)  P-AUROC  P-PRO (Table II)
PUBLISHED = """
bottle      100  98.7 97.1
cable       99.8 98.5 98.1
capsule     99.7 99.2 98.0
carpet      100  99.0 95.8
grid        100  99.0 97.9
hazelnut    100  99.1 95.6
leather     100  99.4 98.5
metal_nut   99.9 99.1 97.4
pill        98.7 99.2 98.0
screw       98.5 99.2 96.9
tile        100  97.6 99.3
toothbrush  100  98.9 99.6
transistor  100  97.7 96.7
wood        99.8 95.8 92.2
zipper      100  98.8 98.1
mean        99.8 98.6 97.3
"""

TABLE = pbas_paper.table(
    "mvtec",
    title="PBAS, MVTec AD (WRN-50, 288 px, last epoch)",
    source="the PBAS paper, Tables I (I-AUROC) and II (P-AUROC / P-PRO)",
    metrics=("image_auroc", "pixel_auroc", "aupro"),
    published=PUBLISHED,
    per_class=True,
    settings_detail="toothbrush and wood resized to 329 then cropped to 288",
)

if __name__ == "__main__":
    raise SystemExit(main(TABLE))
