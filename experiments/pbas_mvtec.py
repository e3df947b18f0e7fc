"""PBAS on MVTec AD (paper Tables I and II; shared/specs/pbas.md §10) next to jad's run.

    python experiments/pbas_mvtec.py --data_root=/path/to/mvtec_anomaly_detection \
        --weights=weights/wrn50_v1 --workdir=runs/experiments/pbas_mvtec
    python experiments/pbas_mvtec.py --synthetic      # smoke run on generated data, NOT comparable

Writes <workdir>/results.md and results.json; the jad run itself lives in <workdir>/run/ (rerun
the same command to resume or restore). Any ``--config.a.b=value`` override of jad.train works.
"""

from common import Reference, Table, main, rows

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

TABLE = Table(
    name="pbas_mvtec",
    method="pbas",
    dataset="mvtec",
    title="PBAS, MVTec AD (WRN-50, 288 px, last epoch)",
    metrics=("image_auroc", "pixel_auroc", "aupro"),
    references=(
        Reference(
            source="the PBAS paper, Tables I (I-AUROC) and II (P-AUROC / P-PRO)",
            metrics=("image_auroc", "pixel_auroc", "aupro"),
            rows=rows(PUBLISHED),
            protocol="Test-selected: the best of 640 epochs by test I-AUROC + P-AUROC.",
            not_comparable={
                "aupro": "the paper's P-PRO is SimpleNet-style (dilated predictions, coarse thresholds, "
                "rescaled FPR axis; pbas.md §9), jad's is the standard MVTec AU-PRO"
            },
            labels={"aupro": "P-PRO"},
        ),
    ),
    protocol=(
        "Published: the PBAS paper. Its numbers are test-selected: the official code scores the "
        "test set after every one of its 640 epochs and keeps the epoch with the best test "
        "I-AUROC + P-AUROC (shared/specs/pbas.md §7), so they are an upper bound for an honest "
        "protocol. jad reports the LAST epoch of a fixed budget (train.select=last); expect lower "
        "numbers. The official protocol, for comparison only and labelled invalid in results.json: "
        "--config.train.select=test_official. Settings are the official code's (288 px, k = 0.25, "
        "640 epochs, batch 8; toothbrush and wood resized to 329 then cropped to 288); the paper's text says 256 px, k = 0.3, 400 epochs "
        "(--config.pbas.k=0.3 --config.train.epochs=400 --config.data.resize=256 "
        "--config.data.crop=256). The paper's P-PRO is the SimpleNet-style PRO (dilated predictions, "
        "200 linear thresholds, FPR axis rescaled), which inflates it; jad reports the standard "
        "MVTec AU-PRO, so no Δ is shown for it. Weights: torchvision IMAGENET1K_V1 "
        "wide_resnet50_2 converted with `python -m jad.convert`."
    ),
)

if __name__ == "__main__":
    raise SystemExit(main(TABLE))
