"""Load and run a detector exported by ``python -m jad.export`` (needs only jax and numpy).

    import jad.serving
    detector = jad.serving.load("detector.jax")
    out = detector(images)   # images: float32 [B, H, W, 3], preprocessed (detector.preprocessing)
    out["image_scores"], out["anomaly_maps"]          # raw scores [B], maps [B, H, W]
    out["normalised_scores"], out["decisions"]        # when the model was calibrated

The file is ``MAGIC``, an 8-byte little-endian header length, a JSON header (method, category,
preprocessing, the backbone's provenance, the calibration record, the dataset licence note and
the jax version it was exported with) and the ``jax.export`` serialisation of the scoring
function (backbone, heads and memory bank baked in as constants; symbolic batch size).
Nothing here imports jad's training stack, Flax, optax or torch.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"JADEXPORT1\n"


class DetectorError(ValueError):
    """A file that is not a jad detector, or images of the wrong shape."""


def read(path: str | Path) -> tuple[dict[str, Any], bytes]:
    """(header, serialized function) of a detector file."""
    data = Path(path).read_bytes()
    if not data.startswith(MAGIC):
        raise DetectorError(f"{path} is not a jad detector (python -m jad.export writes them)")
    (n,) = struct.unpack("<Q", data[len(MAGIC) : len(MAGIC) + 8])
    start = len(MAGIC) + 8
    header = json.loads(data[start : start + n].decode())
    return header, data[start + n :]


def pack(header: dict[str, Any], serialized: bytes) -> bytes:
    h = json.dumps(header, sort_keys=True, allow_nan=False).encode()
    return MAGIC + struct.pack("<Q", len(h)) + h + serialized


def _normalise(scores: np.ndarray, p: dict[str, float]) -> np.ndarray:
    z = (np.asarray(scores, np.float64) - p["threshold"]) / p["width"]
    return (1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))).astype(np.float32)


class Detector:
    """A loaded detector: ``detector(images) -> dict`` (see the module docstring)."""

    def __init__(self, header: dict[str, Any], serialized: bytes):
        from jax import export

        self.metadata = header
        self.preprocessing = header["preprocessing"]
        self.calibration = header.get("calibration")
        self._exported = export.deserialize(bytearray(serialized))

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        images = np.asarray(images, np.float32)
        size = int(self.preprocessing["crop"])
        if images.ndim != 4 or images.shape[1:] != (size, size, 3):
            raise DetectorError(
                f"images must be float32 [B, {size}, {size}, 3] (preprocessed as "
                f"detector.preprocessing), got {images.shape}"
            )
        scores, maps = self._exported.call(images)
        out = {"image_scores": np.asarray(scores), "anomaly_maps": np.asarray(maps)}
        cal = self.calibration
        if cal is not None:
            out["normalised_scores"] = _normalise(out["image_scores"], cal["image_norm"])
            out["decisions"] = out["image_scores"] > cal["image_threshold"]
            if "pixel_threshold" in cal:
                out["defect_masks"] = out["anomaly_maps"] > cal["pixel_threshold"]
        return out


def load(path: str | Path) -> Detector:
    """The detector saved at ``path`` by ``python -m jad.export``."""
    header, serialized = read(path)
    if header.get("format") != 1:
        raise DetectorError(f"{path}: unsupported detector format {header.get('format')!r}")
    return Detector(header, serialized)


__all__ = ["Detector", "DetectorError", "load"]
