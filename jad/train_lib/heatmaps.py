"""Heatmap panels: image | heatmap | overlay (| ground-truth mask), written as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from jad.imaging import IMAGENET_MEAN, IMAGENET_STD
from jad.utils.atomic import atomic_file

# A perceptually ordered dark-blue -> cyan -> yellow -> red ramp (anchor colours, interpolated).
_ANCHORS = np.array(
    [
        [0.0, 0, 0, 80],
        [0.25, 0, 90, 200],
        [0.5, 40, 200, 200],
        [0.75, 250, 220, 40],
        [1.0, 200, 0, 0],
    ],
    np.float32,
)


def colormap(values: np.ndarray) -> np.ndarray:
    """values in [0, 1], any shape -> uint8 RGB [..., 3]."""
    v = np.clip(np.asarray(values, np.float32), 0.0, 1.0)
    out = np.stack([np.interp(v, _ANCHORS[:, 0], _ANCHORS[:, c]) for c in (1, 2, 3)], axis=-1)
    return out.round().astype(np.uint8)


def denormalize(image: np.ndarray) -> np.ndarray:
    """ImageNet-normalised float32 [H, W, 3] -> uint8 RGB."""
    x = np.asarray(image, np.float32) * IMAGENET_STD + IMAGENET_MEAN
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def colour_range(maps: np.ndarray) -> tuple[float, float]:
    """One colour scale for a set of maps: their 1st to 99.9th percentile.

    A shared scale keeps good images dark; percentiles stop one extreme image from washing out
    every other panel.
    """
    lo, hi = np.percentile(np.asarray(maps, np.float32), [1.0, 99.9])
    return float(lo), float(max(hi, lo + 1e-12))


def panel(
    image_uint8: np.ndarray,
    amap: np.ndarray,
    *,
    vmin: float,
    vmax: float,
    mask: np.ndarray | None = None,
    pred_mask: np.ndarray | None = None,
) -> np.ndarray:
    """uint8 [H, W*k, 3]: image | heatmap | overlay | (mask) | (predicted mask).

    The colour scale is [vmin, vmax]; masks are white where ``!= 0``.
    """
    scale = max(float(vmax) - float(vmin), 1e-12)
    heat = colormap((np.asarray(amap, np.float32) - vmin) / scale)
    overlay = (
        (0.55 * image_uint8.astype(np.float32) + 0.45 * heat.astype(np.float32))
        .round()
        .astype(np.uint8)
    )
    parts = [image_uint8, heat, overlay]
    for m in (mask, pred_mask):
        if m is not None:
            m = (np.asarray(m) != 0).astype(np.uint8) * 255
            parts.append(np.repeat(m[..., None], 3, axis=-1))
    gap = np.full((image_uint8.shape[0], 4, 3), 255, np.uint8)
    out = []
    for i, p in enumerate(parts):
        if i:
            out.append(gap)
        out.append(p)
    return np.concatenate(out, axis=1)


def caption(panel_uint8: np.ndarray, text: str, *, colour=(0, 0, 0)) -> np.ndarray:
    """The panel with a 16-px white strip on top holding ``text`` (PIL's default font)."""
    from PIL import ImageDraw

    h, w = panel_uint8.shape[:2]
    strip = Image.new("RGB", (w, 16), (255, 255, 255))
    ImageDraw.Draw(strip).text((3, 2), text, fill=colour)
    return np.concatenate([np.asarray(strip, np.uint8), panel_uint8], axis=0)


def save_png(array: np.ndarray, path: Path) -> Path:
    """Atomic PNG write (``jad.utils.atomic``)."""
    with atomic_file(path, "wb") as f:
        Image.fromarray(array).save(f, format="PNG")
    return Path(path)


def heatmap_name(image_path: str, index: int) -> str:
    """A readable unique PNG name from the image's path: ``<defect>_<stem>.png``."""
    p = Path(str(image_path))
    parent = p.parent.name or "img"
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{parent}_{p.stem}")
    return f"{index:04d}_{stem}.png"
