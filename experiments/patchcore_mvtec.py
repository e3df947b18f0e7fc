"""PatchCore on MVTec AD (the paper's main table, class means; shared/specs/patchcore.md §8) next
to jad's run, plus the released results.csv means and the per-class PatchCore baseline logged by
the ProxyCore repository.

    python experiments/patchcore_mvtec.py --data_root=/path/to/mvtec_anomaly_detection \
        --weights=weights/wrn50_v1 --workdir=runs/experiments/patchcore_mvtec
    python experiments/patchcore_mvtec.py --synthetic      # smoke run on generated data, NOT comparable

Writes <workdir>/results.md and results.json; the jad run itself lives in <workdir>/run/ (rerun
the same command to resume or restore). Any ``--config.a.b=value`` override of jad.train works.
"""

from common import Reference, Table, main, rows
from proxycore_logs import patchcore_baseline

TABLE = Table(
    name="patchcore_mvtec",
    method="patchcore",
    dataset="mvtec",
    title="PatchCore, MVTec AD (WRN-50, 224 px, 10 % coreset)",
    metrics=("image_auroc", "pixel_auroc", "aupro"),
    references=(
        Reference(
            source="the PatchCore paper (WRN-50, 224 px, 10 % bank, class means)",
            metrics=("image_auroc", "pixel_auroc", "aupro"),
            rows=rows("mean 99.0 98.1 93.5"),
            protocol="Only class means are published (the paper's per-class numbers are not in "
            "the spec). Seed and epoch do not apply: PatchCore has no training.",
            not_comparable={
                "aupro": "the paper's PRO comes from an unreleased implementation (FPR limit, "
                "thresholds unknown); jad reports the standard MVTec AU-PRO",
            },
            labels={"aupro": "PRO"},
        ),
        Reference(
            source="the official repository's released IM224_WR50_L2-3_P01 results.csv (means)",
            metrics=("image_auroc", "pixel_auroc", "aupro"),
            rows=rows("mean 99.16 98.11 94.37"),
            protocol="The released model folder of the same setting (10 % bank, 1-NN, seed 0); "
            "P-AUROC is its full_pixel_auroc (all test images), PRO its anomaly-only PRO.",
            not_comparable={
                "aupro": "anomaly_pro over defective images only, unreleased implementation",
            },
            labels={"aupro": "PRO (anom.)"},
        ),
        patchcore_baseline("mvtec"),  # per class, but another code base (RACM weights)
    ),
    protocol=(
        "Published: the PatchCore paper (WRN-50 ImageNet weights, layer2+3, 256 -> 224 px, "
        "approximate greedy coreset 10 %, 1-NN, squared L2 in the official code). The official "
        "numbers include the code's load-time BatchNorm update and its bilinear mask path; jad's "
        "defaults are the clean ones (add --config.backbone.replay_load_bn_update=True "
        "--config.data.mask_mode=bilinear_eq1 for the official numerics). Weights: torchvision "
        "IMAGENET1K_V1 wide_resnet50_2 converted with `python -m jad.convert`."
    ),
)

if __name__ == "__main__":
    raise SystemExit(main(TABLE))
