"""PatchCore on VisA. The PatchCore paper has no VisA table; the reference is the PatchCore baseline
logged by the ProxyCore repository (shared/specs/proxycore.md §10).

    python experiments/patchcore_visa.py --data_root=/path/to/visa \
        --weights=weights/wrn50_v1 --workdir=runs/experiments/patchcore_visa
    python experiments/patchcore_visa.py --synthetic      # smoke run on generated data, NOT comparable

Writes <workdir>/results.md and results.json; the jad run itself lives in <workdir>/run/ (rerun
the same command to resume or restore). Any ``--config.a.b=value`` override of jad.train works.
"""

from common import Table, main
from proxycore_logs import patchcore_baseline

TABLE = Table(
    name="patchcore_visa",
    method="patchcore",
    dataset="visa",
    title="PatchCore, VisA (WRN-50, 224 px, 10 % coreset)",
    metrics=("image_auroc", "pixel_auroc", "aupro"),
    references=(patchcore_baseline("visa"),),
    no_reference="the PatchCore paper reports MVTec AD only (shared/specs/patchcore.md §8); the "
    "only VisA numbers for PatchCore in the specs are those the ProxyCore repository logged",
    protocol=(
        "Reference: PatchCore run by the ProxyCore repository in its own code base (not the "
        "PatchCore authors), per class. jad runs configs/patchcore_visa.py: WRN-50 layer2+3, "
        "256 -> 224 px, 10 % approximate coreset, 1-NN, VisA's split_csv/1cls.csv split; no "
        "training, so no epoch or model selection."
    ),
)

if __name__ == "__main__":
    raise SystemExit(main(TABLE))
