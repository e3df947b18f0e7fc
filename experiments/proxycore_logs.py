"""The ProxyCore repository's logged results (``results/``, seed 0), transcribed once from
``shared/specs/proxycore.md`` §10 for the proxycore_* scripts and, for its PatchCore baseline,
the patchcore_* scripts. No ProxyCore paper table was available; these logs are the only numbers.

Columns per dataset: final (the last evaluation, after epoch 200) I-AUROC P-AUROC P-AP | selected
(the evaluation with the highest TEST pixel AP: test-set selection) I-AUROC P-AUROC P-AP |
PatchCore in the same code base I-AUROC P-AUROC P-AP (``results/PatchCore/<ds>/<cls>/
BASELINE_identity_sampling_ratio_0.1-anomaly_ratio_0.0``: 10 % coreset, k = 1).
"""

from common import Reference, Table, rows

METRICS = ("image_auroc", "pixel_auroc", "pixel_ap")

LOGGED = {
    # run BASELINE_focalloss_augment_norm_core_coreset_init_T_0.05
    "mvtec": """
bottle       100.00 98.44 84.40 | 100.00 98.44 84.46 | 100.00 98.47 82.15
cable        98.88 97.85 71.08 | 98.05 97.87 74.16 | 97.26 97.85 70.49
capsule      98.64 98.42 49.16 | 98.92 98.86 53.94 | 98.80 98.79 52.57
carpet       93.54 98.87 78.49 | 93.54 98.87 78.49 | 98.23 98.91 66.45
grid         82.12 96.49 40.01 | 96.24 98.47 48.89 | 97.41 98.41 48.13
hazelnut     99.89 98.37 64.49 | 100.00 98.52 65.95 | 100.00 98.54 65.47
leather      91.41 98.95 57.25 | 97.66 99.26 59.53 | 100.00 99.19 52.66
metal_nut    99.32 97.27 86.25 | 100.00 98.27 89.24 | 99.90 98.15 88.87
pill         92.42 94.17 61.88 | 92.99 96.41 67.93 | 94.57 96.69 70.62
screw        90.08 97.22 31.14 | 96.97 99.25 45.91 | 98.42 99.22 46.09
tile         95.78 91.23 50.33 | 98.99 95.90 59.76 | 98.85 95.04 53.45
toothbrush   99.44 98.64 60.27 | 99.44 98.79 65.41 | 100.00 98.69 61.73
transistor   98.12 93.59 60.10 | 98.17 94.08 63.34 | 99.08 95.53 66.45
wood         94.65 91.93 42.13 | 99.30 94.46 53.72 | 99.04 94.56 54.81
zipper       98.61 97.50 57.71 | 99.16 98.54 68.04 | 99.32 98.70 65.34
mean         95.53 96.59 59.65 | 97.96 97.73 65.25 | 98.73 97.78 63.02
""",
    # run ..._T_0.1 (the only temperature logged with the final recipe)
    "visa": """
candle       97.70 98.41 29.72 | 98.03 98.97 30.93 | 98.71 98.94 30.59
capsules     69.70 97.41 62.09 | 74.27 98.92 72.20 | 81.02 98.92 72.42
cashew       91.82 92.17 40.21 | 96.84 98.58 59.91 | 97.28 98.18 57.04
chewinggum   96.46 98.28 61.37 | 99.52 99.01 67.05 | 98.76 98.82 62.70
fryum        91.38 87.41 32.86 | 94.98 91.37 38.83 | 96.02 91.40 39.44
macaroni1    84.18 98.17 22.42 | 93.43 99.11 26.05 | 96.18 99.33 25.41
macaroni2    67.17 92.09 5.59 | 80.77 98.03 16.43 | 76.57 97.69 13.79
pcb1         95.35 99.21 77.26 | 96.62 99.45 85.16 | 97.76 99.56 84.03
pcb2         94.18 97.47 22.30 | 94.18 97.47 22.30 | 96.94 98.10 21.67
pcb3         94.76 98.50 48.56 | 96.09 99.02 52.27 | 96.67 98.96 51.06
pcb4         99.35 96.22 42.27 | 99.32 96.35 44.16 | 99.63 97.34 44.55
pipe_fryum   99.40 97.51 48.10 | 99.72 98.70 56.88 | 99.88 98.66 57.67
mean         90.12 96.07 41.06 | 93.65 97.92 47.68 | 94.62 97.99 46.70
""",
    # run ..._norm_core_..._T_0.1; the spec transcribes only the means
    "mpdd": """
mean         95.69 97.16 42.32 | 96.05 98.46 50.93 | 96.28 98.32 49.14
""",
}
RUNS = {
    "mvtec": "BASELINE_focalloss_augment_norm_core_coreset_init_T_0.05",
    "visa": "BASELINE_focalloss_augment_norm_core_coreset_init_T_0.1",
    "mpdd": "..._norm_core_..._T_0.1",
}

AP_NOTE = (
    "the repository's AP is the trapezoid area under the PR curve (auc(recall, precision)), "
    "jad's is sklearn's step-wise average precision; small differences are expected"
)
CODE_BASE = (
    "the official ProxyCore code base: timm 0.6.5 RACM wide_resnet50_2 weights, 256 -> 224 px, "
    "masks bilinear-resized and binarised > 0, seed 0"
)


def final(dataset: str) -> Reference:
    """ProxyCore's last logged evaluation (after 200 epochs): the protocol jad reports."""
    return Reference(
        source=f"ProxyCore's logged final evaluation (repository results/, run {RUNS[dataset]})",
        metrics=METRICS,
        rows=rows(LOGGED[dataset], slice(0, 3)),
        protocol="The last evaluation after 200 epochs (fixed budget, like jad's default), from "
        f"the official code with its defects B1-B3 (jad's variant=faithful) and {CODE_BASE}.",
        notes={"pixel_ap": AP_NOTE},
    )


def selected(dataset: str) -> Reference:
    """The analysis notebook's numbers: per class the evaluation with the best TEST pixel AP."""
    return Reference(
        source="ProxyCore's logged test-selected evaluation (max test pixel AP; NOT a valid "
        "protocol)",
        metrics=METRICS,
        rows=rows(LOGGED[dataset], slice(3, 6)),
        protocol="Per class, the one of the 10 logged evaluations (epochs 0, 24, ..., 192, 199) "
        "with the highest pixel AP on the test set: test-set model selection. Shown because it "
        "is what the repository's notebook reports; jad never selects on the test set.",
        notes={"pixel_ap": AP_NOTE},
    )


def patchcore_baseline(dataset: str) -> Reference:
    """PatchCore as run and logged by the ProxyCore repository (not a PatchCore paper number)."""
    return Reference(
        source="PatchCore as logged by the ProxyCore repository (results/PatchCore, not the "
        "PatchCore paper)",
        metrics=METRICS,
        rows=rows(LOGGED[dataset], slice(6, 9)),
        protocol=f"PatchCore (10 % coreset, 1-NN) run in {CODE_BASE}. The spec notes this "
        "baseline is ~0.3-0.5 I-AUROC below the published WRN-50 PatchCore on MVTec AD (cause "
        "unknown; the RACM weights are a candidate).",
        notes={"pixel_ap": AP_NOTE},
    )


TITLES = {"mvtec": "MVTec AD", "visa": "VisA", "mpdd": "MPDD"}
TEMPERATURES = {"mvtec": "0.05", "visa": "0.1", "mpdd": "0.1"}  # the logged runs' T per dataset


def table(dataset: str) -> Table:
    """The ProxyCore table of ``dataset``: the repository's final and test-selected logs beside
    jad's run, with the protocol (one text for the three datasets, which differ only in T)."""
    return Table(
        name=f"proxycore_{dataset}",
        method="proxycore",
        dataset=dataset,
        title=f"ProxyCore, {TITLES[dataset]} (WRN-50, 224 px, last epoch)",
        metrics=("image_auroc", "pixel_auroc", "pixel_ap"),
        references=(final(dataset), selected(dataset)),
        protocol=(
            "Published: no ProxyCore paper table was available (shared/specs/proxycore.md §10); the "
            "references are the official repository's logs. Their final evaluation is the one to "
            "compare with: jad reports the LAST epoch of the fixed 200-epoch budget "
            "(train.select=last). The test-selected numbers are shown for completeness; jad never "
            "selects on the test set. The logs come from the official code with defects that "
            "change results (B1 permuted pseudo-labels, B2 uniform random proxies, B3 focal loss "
            "of the batch-mean CE): jad's default is variant=fixed; "
            "--config.proxycore.variant=faithful reproduces them. They used timm 0.6.5's RACM "
            "wide_resnet50_2 weights (convert wide_resnet50_racm-8234f177.pth with "
            "`python -m jad.convert` and pass that folder as --weights to match; torchvision "
            "IMAGENET1K_V1 otherwise), 256 -> 224 px, pseudo-label and bank coresets at 10 %, "
            f"T = {TEMPERATURES[dataset]}, masks bilinear-resized and binarised > 0. The same code "
            f"base's PatchCore baseline is in the patchcore_{dataset} script."
        ),
    )
