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

import glob
import os
from pathlib import Path

import numpy as np
from absl import flags

from jad.data.layouts import IMAGE_EXTENSIONS
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


def find_images(spec: str) -> list[str]:
    from jad.utils.errors import UserError

    p = Path(spec).expanduser()
    if p.is_dir():
        files = [
            str(f)
            for f in sorted(p.rglob("*"))
            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
        ]
    elif p.is_file():
        files = [str(p)]
    else:
        files = sorted(
            f
            for f in glob.glob(os.path.expanduser(spec), recursive=True)
            if f.lower().endswith(IMAGE_EXTENSIONS)
        )
    if not files:
        raise UserError(
            f"no images found at '{spec}' (give a folder, a file or a glob; extensions: {', '.join(IMAGE_EXTENSIONS)})"
        )
    return files


def mvtec_mask_for(image_path: str) -> str | None:
    """``<root>/test/<defect>/<stem>.<ext>`` -> ``<root>/ground_truth/<defect>/<stem>_mask.png`` if it exists."""
    p = Path(image_path)
    if len(p.parts) < 3 or p.parent.parent.name != "test":
        return None
    gt = p.parent.parent.parent / "ground_truth" / p.parent.name
    for name in (f"{p.stem}_mask.png", f"{p.stem}.png", f"{p.stem}_mask.bmp", f"{p.stem}.bmp"):
        if (gt / name).is_file():
            return str(gt / name)
    return None


def main(argv: list[str]) -> int:
    del argv
    import ml_collections

    from jad import data as jdata
    from jad.methods.common import build_method
    from jad.train_lib import checkpoint, heatmaps, runner
    from jad.utils.atomic import write_json
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
    from jad.metrics import normalise

    cal = meta.get("calibration")
    vmin, vmax = heatmaps.colour_range(np.stack(maps))
    records = []
    for j, (f, s, m, img) in enumerate(zip(files, scores, maps, shown, strict=True)):
        mask_path = mvtec_mask_for(f)
        mask = jdata.preprocess_mask(mask_path, pre) if mask_path else None
        name = heatmaps.heatmap_name(f, j)
        rec: dict = {"path": f, "image_score": s, "ground_truth_mask": mask_path}
        text = f"score {s:.4g}"
        if cal is not None:
            defective = bool(s > cal["image_threshold"])
            rec["normalised_score"] = float(normalise(np.asarray([s]), cal["image_norm"])[0])
            rec["decision"] = "defective" if defective else "good"
            text = f"{rec['decision'].upper()}  score {rec['normalised_score']:.3f} (raw {s:.4g})"
            if "pixel_threshold" in cal:
                pred_mask = (m > cal["pixel_threshold"]).astype(np.uint8) * np.uint8(255)
                mask_png = heatmaps.save_png(pred_mask, out_dir / name.replace(".png", "_mask.png"))
                rec["defect_mask"] = str(mask_png)
                rec["defect_fraction"] = float((pred_mask > 0).mean())
        colour = (200, 0, 0) if rec.get("decision") == "defective" else (0, 0, 0)
        png = heatmaps.save_png(
            heatmaps.caption(
                heatmaps.panel(img, m, vmin=vmin, vmax=vmax, mask=mask), text, colour=colour
            ),
            out_dir / name,
        )
        rec["heatmap"] = str(png)
        records.append(rec)
    payload = {
        "workdir": str(workdir),
        "category": category,
        "colour_scale": [vmin, vmax],
        "calibration": cal,
        "decision_rule": (
            f"defective iff raw score > {cal['image_threshold']:.6g} ({cal['image_threshold_rule']})"
            if cal is not None
            else "no calibration in this workdir (calibration.holdout was 0): raw scores only"
        ),
        "predictions": records,
    }
    write_json(out_dir / "predictions.json", payload)
    from jad.train_lib import report_html

    page = report_html.predictions_page(out_dir, payload)
    for r in records:
        extra = f"{r['normalised_score']:8.3f}  {r['decision']:<9}" if cal is not None else ""
        print(f"{r['image_score']:12.5f}  {extra}  {r['path']}")
    if cal is None:
        print("\nno calibrated threshold in this workdir (trained with calibration.holdout=0)")
    print(f"\n{len(records)} images scored; heatmaps and predictions.json in {out_dir}")
    print(f"page: {page} (sorted by score)")
    return 0


if __name__ == "__main__":
    cli.run(main, needs_config=False)
