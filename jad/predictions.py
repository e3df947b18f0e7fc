"""What ``jad.predict`` and ``python -m jad.serving`` write for scored images (numpy + Pillow).

One writer for both, so a trained workdir and its exported detector give the same
``predictions.json``, panels (image | heatmap | overlay, captioned with score and decision) and
predicted defect masks (``<name>_mask.png``) for the same files.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jad.imaging import IMAGE_EXTENSIONS
from jad.utils.errors import UserError


def find_images(spec: str) -> list[str]:
    """Image files of a folder (recursively), a file or a glob, sorted.

    Raises:
      UserError: nothing found.
    """
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


def write(
    out_dir: Path,
    files: Sequence[str],
    scores: Sequence[float],
    normalised: Sequence[float] | None,
    maps: Sequence[np.ndarray],
    shown: Sequence[np.ndarray],
    calibration: dict[str, Any] | None,
    source: dict[str, Any],
    ground_truth: Callable[[str], np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """Writes the panels, predicted masks and ``predictions.json``; returns the records.

    Args:
      out_dir: the output folder.
      files: the image paths, in order.
      scores: raw image scores, one per file.
      normalised: the calibrated normalised scores (0.5 = threshold), or None without calibration.
      maps: anomaly maps, float32 ``[crop, crop]`` each.
      shown: the preprocessed images as uint8 RGB ``[crop, crop, 3]`` (the panels' left side).
      calibration: the calibration record (thresholds, normaliser) or None.
      source: what scored them (``{"workdir": ..., "category": ...}`` or the detector's), first
        keys of ``predictions.json``.
      ground_truth: ``mask path -> float32 [crop, crop]`` for the panel's mask column; None to
        leave it out (the path is recorded either way).
    """
    from jad.train_lib import heatmaps
    from jad.utils.atomic import write_json

    cal = calibration
    vmin, vmax = heatmaps.colour_range(np.stack(maps))
    records = []
    for j, (f, s, m, img) in enumerate(zip(files, scores, maps, shown, strict=True)):
        s = float(s)
        mask_path = mvtec_mask_for(f)
        mask = ground_truth(mask_path) if mask_path and ground_truth is not None else None
        name = heatmaps.heatmap_name(f, j)
        rec: dict = {"path": f, "image_score": s, "ground_truth_mask": mask_path}
        text = f"score {s:.4g}"
        if cal is not None:
            defective = bool(s > cal["image_threshold"])
            rec["normalised_score"] = float(normalised[j])
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
    write_json(
        out_dir / "predictions.json",
        {
            **source,
            "colour_scale": [vmin, vmax],
            "calibration": cal,
            "decision_rule": (
                f"defective iff raw score > {cal['image_threshold']:.6g} ({cal['image_threshold_rule']})"
                if cal is not None
                else "no calibration in this workdir (calibration.holdout was 0): raw scores only"
            ),
            "predictions": records,
        },
    )
    return records


def summary(records: Sequence[dict[str, Any]], calibrated: bool, out_dir: Path) -> str:
    """The console table: raw score (normalised score, decision) and path per image."""
    lines = []
    for r in records:
        extra = f"{r['normalised_score']:8.3f}  {r['decision']:<9}" if calibrated else ""
        lines.append(f"{r['image_score']:12.5f}  {extra}  {r['path']}")
    if not calibrated:
        lines.append(
            "\nno calibrated threshold in this workdir (trained with calibration.holdout=0)"
        )
    lines.append(f"\n{len(records)} images scored; heatmaps and predictions.json in {out_dir}")
    return "\n".join(lines)
