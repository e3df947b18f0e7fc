"""Helpers shared by the jad.data tests: write small images with numpy + Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def save(path: Path, array: np.ndarray, mode: str | None = None, fmt: str | None = None) -> Path:
    """Writes ``array`` as an image file (format from the extension unless ``fmt``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array), mode).save(path, format=fmt)
    return path


def rgb(seed: int, h: int = 24, w: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def square_mask(h: int = 24, w: int = 32, value: int = 255) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[4:12, 6:14] = value
    return m
