"""Score new images with a trained workdir.

    python -m jad.predict --workdir=runs/patchcore_synthetic --images='path/to/dir_or_glob' [--category=c]

Writes ``<out>/predictions.json``, ``<out>/predictions.html`` (one self-contained page, sorted by
score, decisions marked) and, per image, a PNG panel image | heatmap | overlay (plus the
ground-truth mask when the image sits in an MVTec-style tree: ``.../test/<defect>/<stem>.png`` with
``.../ground_truth/<defect>/<stem>_mask.png``) captioned with its score and decision.

With a calibrated model (``calibration.holdout > 0``, the default) each prediction holds the raw
score, the normalised score (0.5 = the threshold; ``jad.metrics.calibration``), the decision
(``defective`` iff the raw score is above the threshold calibrated on normal training images only)
and the predicted defect mask (map above the pixel threshold) as ``<name>_mask.png``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from absl import flags

from jad.predictions import find_images
from jad.train_lib import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A folder written by jad.train.", required=True)
_IMAGES = flags.DEFINE_string(
    "images", None, "An image folder (searched recursively) or a glob.", required=True
)
_CATEGORY = flags.DEFINE_string(
    "category", None, "Which category's model to use (needed if the workdir has several)."
)
_OUT = flags.DEFINE_string("out", None, "Output folder (default: <workdir>/predict/<category>).")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Images per batch.")


def main(argv: list[str]) -> int:
    del argv
    import ml_collections

    from jad import data as jdata
    from jad.methods.common import build_method
    from jad.train_lib import checkpoint, heatmaps, runner
    from jad.utils.errors import UserError
    from jad.utils.progress import Progress

    workdir = Path(_WORKDIR.value)
    if not workdir.is_dir():
        raise UserError(f"workdir {workdir} does not exist (train first with python -m jad.train)")
    from jad.train_lib.runner import pick_category

    category = pick_category(workdir, _CATEGORY.value)
    files = find_images(_IMAGES.value)
    state, meta = checkpoint.restore(workdir / category / "checkpoint")
    config = ml_collections.ConfigDict(meta["config"])
    method = build_method(config)
    pre = runner.preprocess(config, category)
    out_dir = Path(_OUT.value) if _OUT.value else workdir / "predict" / category
    scores: list[float] = []
    maps: list[np.ndarray] = []
    shown: list[np.ndarray] = []
    with Progress("predict", len(files), unit="img") as bar:
        for i in range(0, len(files), _BATCH.value):
            chunk = files[i : i + _BATCH.value]
            images = np.stack([jdata.preprocess_image(f, pre) for f in chunk])
            pred = method.predict(state, images)
            scores.extend(float(s) for s in pred.image_scores)
            maps.extend(pred.anomaly_maps)
            shown.extend(heatmaps.denormalize(x) for x in images)
            bar.update(len(chunk))
    from jad import predictions
    from jad.metrics import normalise

    cal = meta.get("calibration")
    records = predictions.write(
        out_dir,
        files,
        scores,
        normalise(np.asarray(scores), cal["image_norm"]) if cal is not None else None,
        maps,
        shown,
        cal,
        {"workdir": str(workdir), "category": category},
        ground_truth=lambda path: jdata.preprocess_mask(path, pre),
    )
    print(predictions.summary(records, cal is not None, out_dir))
    import json

    from jad.train_lib import report_html

    page = report_html.predictions_page(
        out_dir, json.loads((out_dir / "predictions.json").read_text())
    )
    print(f"page: {page} (sorted by score)")
    return 0


if __name__ == "__main__":
    cli.run(main, needs_config=False)
