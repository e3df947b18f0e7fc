"""PatchCore on MPDD. The PatchCore paper has no MPDD table; the reference is the PatchCore baseline
logged by the ProxyCore repository (means only; shared/specs/proxycore.md §10).

    python experiments/patchcore_mpdd.py --data_root=/path/to/mpdd \
        --weights=weights/wrn50_v1 --workdir=runs/experiments/patchcore_mpdd
    python experiments/patchcore_mpdd.py --synthetic      # smoke run on generated data, NOT comparable

Writes <workdir>/results.md and results.json; the jad run itself lives in <workdir>/run/ (rerun
the same command to resume or restore). Any ``--config.a.b=value`` override of jad.train works.
"""

from common import Table, main
from proxycore_logs import patchcore_baseline

TABLE = Table(
    name="patchcore_mpdd",
    method="patchcore",
    dataset="mpdd",
    title="PatchCore, MPDD (WRN-50, 224 px, 10 % coreset)",
    metrics=("image_auroc", "pixel_auroc", "aupro"),
    references=(patchcore_baseline("mpdd"),),
    no_reference="the PatchCore paper reports MVTec AD only (shared/specs/patchcore.md §8); the "
    "only MPDD numbers for PatchCore in the specs are the means the ProxyCore repository logged",
    protocol=(
        "Reference: PatchCore run by the ProxyCore repository in its own code base (not the "
        "PatchCore authors), means over the 6 classes. jad runs configs/patchcore_mpdd.py: "
        "WRN-50 layer2+3, 256 -> 224 px, 10 % approximate coreset, 1-NN; no training, so no "
        "epoch or model selection."
    ),
)

if __name__ == "__main__":
    raise SystemExit(main(TABLE))
