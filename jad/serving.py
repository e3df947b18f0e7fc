"""Run a detector exported by ``python -m jad.export``: jax + numpy (+ Pillow for raw images).

    import jad.serving
    detector = jad.serving.load("detector.jax")
    out = detector(images)   # a list of uint8 images of any size (HxWx3 / HxW arrays, PIL
                             # images, paths), a uint8 batch [B, H, W, 3], or float32
                             # [B, crop, crop, 3] already preprocessed (taken as is)
    out["image_scores"], out["anomaly_maps"]          # raw scores [B], maps [B, crop, crop]
    out["normalised_scores"], out["decisions"]        # when the model was calibrated

Raw images go through :func:`jad.imaging.preprocess_image`, the transform training and
``jad.predict`` use (Pillow's bilinear resize, centre crop, ImageNet normalisation), with the
sizes in the file's header; it runs in numpy + Pillow before the exported function, which takes
the preprocessed float32 batch. From the shell (same ``predictions.json``, panels and predicted
masks as ``jad.predict``)::

    python -m jad.serving detector.jax IMAGES... --out=DIR

The file is ``MAGIC``, an 8-byte little-endian header length, a JSON header (method, category,
preprocessing, the backbone's provenance, the calibration record, the dataset licence note, the
jax version it was exported with, and the length and SHA-256 of the body) and the ``jax.export``
serialisation of the scoring function (backbone, heads and memory bank baked in as constants;
symbolic batch size). Nothing here imports jad's training stack, Flax, optax or torch.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jad.utils.errors import UserError

MAGIC = b"JADEXPORT1\n"


class DetectorError(UserError, ValueError):
    """A file that is not a readable jad detector, or images it cannot take (one sentence)."""


def read(path: str | Path) -> tuple[dict[str, Any], bytes]:
    """(header, serialized function) of a detector file.

    Raises:
      DetectorError: missing, unreadable, foreign, truncated or damaged file.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DetectorError(f"detector file {path} does not exist") from None
    except OSError as e:
        raise DetectorError(f"cannot read detector file {path} ({e.strerror or e})") from None
    if not data.startswith(MAGIC):
        raise DetectorError(f"{path} is not a jad detector (python -m jad.export writes them)")
    start = len(MAGIC) + 8
    if len(data) < start:
        raise DetectorError(f"{path} is truncated (it ends inside its header); export it again")
    (n,) = struct.unpack("<Q", data[len(MAGIC) : start])
    if len(data) < start + n:
        raise DetectorError(f"{path} is truncated (it ends inside its header); export it again")
    try:
        header = json.loads(data[start : start + n].decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict):
        raise DetectorError(f"{path} is damaged (its header is not valid JSON); export it again")
    body = data[start + n :]
    if "body_bytes" in header and len(body) != header["body_bytes"]:
        raise DetectorError(
            f"{path} is truncated ({len(body)} of {header['body_bytes']} bytes of its function); "
            "export it again"
        )
    if "body_sha256" in header and hashlib.sha256(body).hexdigest() != header["body_sha256"]:
        raise DetectorError(f"{path} is damaged (its function fails its checksum); export it again")
    return header, body


def pack(header: dict[str, Any], serialized: bytes) -> bytes:
    """The file bytes; the header gains the body's length and SHA-256 (checked by :func:`read`)."""
    header = {
        **header,
        "body_bytes": len(serialized),
        "body_sha256": hashlib.sha256(serialized).hexdigest(),
    }
    h = json.dumps(header, sort_keys=True, allow_nan=False).encode()
    return MAGIC + struct.pack("<Q", len(h)) + h + serialized


def _normalise(scores: np.ndarray, p: dict[str, float]) -> np.ndarray:
    z = (np.asarray(scores, np.float64) - p["threshold"]) / p["width"]
    return (1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))).astype(np.float32)


class Detector:
    """A loaded detector: ``detector(images) -> dict`` (see the module docstring)."""

    def __init__(self, header: dict[str, Any], serialized: bytes, path: str | Path = "detector"):
        from jax import export

        self.path = str(path)
        self.metadata = header
        self.preprocessing = header["preprocessing"]
        self.calibration = header.get("calibration")
        try:
            self._exported = export.deserialize(bytearray(serialized))
        except Exception as e:  # noqa: BLE001 - any failure here means an unusable file
            raise DetectorError(
                f"{path} is damaged or was written by an incompatible jax ({type(e).__name__}); "
                "export it again"
            ) from None

    @property
    def crop(self) -> int:
        return int(self.preprocessing["crop"])

    def preprocess(self, images: Any) -> np.ndarray:
        """Raw images -> float32 ``[B, crop, crop, 3]`` (a preprocessed batch is returned as is).

        Args:
          images: float32 ``[B, crop, crop, 3]`` (already preprocessed), a uint8 batch
            ``[B, H, W, 3]``, or a list of images of any sizes: uint8 ``[H, W, 3]`` / ``[H, W]``
            arrays, PIL images, file paths or encoded bytes.
        """
        size = self.crop
        if not isinstance(images, list | tuple):
            a = np.asarray(images)
            if a.dtype == np.float32 and a.ndim == 4 and a.shape[1:] == (size, size, 3):
                return a
            if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3:
                raise DetectorError(
                    f"images must be a list of images, a uint8 batch [B, H, W, 3], or float32 "
                    f"[B, {size}, {size}, 3] already preprocessed; got {a.dtype} {a.shape}"
                )
            images = list(a)
        from jad import imaging  # Pillow: only raw images need it

        for key, ours in (("mean", imaging.IMAGENET_MEAN), ("std", imaging.IMAGENET_STD)):
            theirs = self.preprocessing.get(key)
            if theirs is not None and not np.array_equal(np.float32(theirs), ours):
                raise DetectorError(
                    f"{self.path} normalises with {key} {theirs}, this jad with {ours.tolist()}; "
                    "use the jad version that exported it"
                )
        out = []
        for i, x in enumerate(images):
            if isinstance(x, np.ndarray) and (
                x.dtype != np.uint8 or x.ndim not in (2, 3) or (x.ndim == 3 and x.shape[-1] != 3)
            ):
                raise DetectorError(
                    f"image {i} must be uint8 [H, W, 3] or [H, W], got {x.dtype} {x.shape}"
                )
            try:
                out.append(imaging.preprocess_image(x, int(self.preprocessing["resize"]), size))
            except imaging.ImageError as e:
                raise DetectorError(str(e)) from None
        if not out:
            raise DetectorError("no images given")
        return np.stack(out)

    def __call__(self, images: Any) -> dict[str, np.ndarray]:
        scores, maps = self._exported.call(self.preprocess(images))
        out = {"image_scores": np.asarray(scores), "anomaly_maps": np.asarray(maps)}
        cal = self.calibration
        if cal is not None:
            out["normalised_scores"] = _normalise(out["image_scores"], cal["image_norm"])
            out["decisions"] = out["image_scores"] > cal["image_threshold"]
            if "pixel_threshold" in cal:
                out["defect_masks"] = out["anomaly_maps"] > cal["pixel_threshold"]
        return out


def load(path: str | Path) -> Detector:
    """The detector saved at ``path`` by ``python -m jad.export``.

    Raises:
      DetectorError: the file is missing, not a detector, truncated or damaged.
    """
    header, serialized = read(path)
    if header.get("format") != 1:
        raise DetectorError(f"{path}: unsupported detector format {header.get('format')!r}")
    if not isinstance(header.get("preprocessing"), dict):
        raise DetectorError(f"{path} is damaged (its header has no preprocessing); export it again")
    return Detector(header, serialized, path)


def predict_files(
    detector: Detector, files: Sequence[str], out_dir: Path, batch_size: int = 8
) -> list[dict[str, Any]]:
    """Scores ``files`` and writes what ``jad.predict`` writes (:func:`jad.predictions.write`)."""
    from jad import predictions
    from jad.train_lib.heatmaps import denormalize

    scores, normalised, maps, shown = [], [], [], []
    for i in range(0, len(files), batch_size):
        images = detector.preprocess(list(files[i : i + batch_size]))
        out = detector(images)
        scores.extend(float(s) for s in out["image_scores"])
        normalised.extend(out.get("normalised_scores", []))
        maps.extend(out["anomaly_maps"])
        shown.extend(denormalize(x) for x in images)
    meta = detector.metadata
    source = {
        "detector": detector.path,
        "workdir": meta.get("workdir"),
        "category": meta.get("category"),
        "method": meta.get("method"),
    }
    cal = detector.calibration
    return predictions.write(
        out_dir, files, scores, normalised if cal else None, maps, shown, cal, source
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m jad.serving detector.jax IMAGES... --out=DIR``; user errors: one line, exit 2."""
    p = argparse.ArgumentParser(
        prog="python -m jad.serving",
        description="Score images with an exported detector (writes what jad.predict writes).",
    )
    p.add_argument("detector", help="A file written by python -m jad.export.")
    p.add_argument("images", nargs="+", help="Image files, folders (searched recursively), globs.")
    p.add_argument("--out", required=True, help="Output folder.")
    p.add_argument("--batch_size", "--batch-size", type=int, default=8, help="Images per call.")
    args = p.parse_args(argv)
    from jad import predictions
    from jad.utils.errors import UserError

    try:
        files = [f for spec in args.images for f in predictions.find_images(spec)]
        detector = load(args.detector)
        out_dir = Path(args.out)
        records = predict_files(detector, files, out_dir, max(1, args.batch_size))
    except UserError as e:  # DetectorError, ImageError and the rest derive from it
        print(f"error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    print(predictions.summary(records, detector.calibration is not None, out_dir))
    return 0


__all__ = ["Detector", "DetectorError", "load", "main", "predict_files"]

if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
