"""Image and mask preprocessing: the official PatchCore/PBAS transform, with Pillow + numpy.

Images: :func:`jad.imaging.preprocess_image` (the one implementation, shared with the exported
detectors of ``jad.serving``; numpy + Pillow), here with :class:`DatasetError` for unreadable files.

Masks (``Preprocess.mask_mode``), always float32 ``{0, 1}`` ``[crop, crop]``:

- ``"nearest"`` (jad default, anomalib parity): binarise ``!= 0`` at full resolution, resize the
  shorter side with torch's legacy nearest rule ``src = floor(dst * in / out)`` (float32 scale, as
  ``F.interpolate(mode="nearest")``), same centre crop.
- ``"bilinear_eq1"`` (official PatchCore / PBAS on MVTec and MPDD): the binarised mask as 8-bit
  0/255, PIL bilinear resize, crop, ``/ 255``, positive iff ``== 1.0``. Erodes borders and can
  erase defects a few pixels wide.
- ``"bilinear_gt0"`` (PBAS on VisA, ProxyCore): same resize, positive iff ``> 0``. Dilates.

"Non-zero" is read on the stored single-channel value (class ids, 0/1 and 0/255 masks all work);
an RGB(A) mask is positive where any colour channel is non-zero; a palette mask uses its indices.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from PIL import Image

from jad import imaging
from jad.data.errors import DatasetError
from jad.imaging import IMAGENET_MEAN, IMAGENET_STD, ImageSource, resized_size  # noqa: F401 - re-exported

MASK_MODES = ("nearest", "bilinear_eq1", "bilinear_gt0")
METHODS = ("patchcore", "pbas", "proxycore", "apc")


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """Preprocessing settings.

    Attributes:
      resize: the shorter image side after resizing (px).
      crop: the side of the square centre crop (px), ``<= resize``.
      mask_mode: one of :data:`MASK_MODES` (see the module docstring).
    """

    resize: int = 256
    crop: int = 224
    mask_mode: str = "nearest"

    def __post_init__(self) -> None:
        for field in ("resize", "crop"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
                raise DatasetError(f"Preprocess.{field}={value!r} must be a positive integer.")
        if self.crop > self.resize:
            raise DatasetError(
                f"Preprocess.crop={self.crop} is larger than resize={self.resize}; use crop <= resize."
            )
        if self.mask_mode not in MASK_MODES:
            raise DatasetError(
                f"Preprocess.mask_mode={self.mask_mode!r} is unknown; use one of {', '.join(MASK_MODES)}."
            )


def preprocess_for(method: str, dataset: str, category: str | None = None) -> Preprocess:
    """Per-method presets (configs pass resize/crop/mask_mode explicitly; this is a convenience).

    - ``patchcore``, ``apc``: 256 / 224, ``nearest`` masks.
    - ``pbas``: 288 / 288, ``nearest`` masks; MVTec / MPDD / synthetic ``wood`` and ``toothbrush``:
      resize ``int(288 * 8 / 7) = 329``, crop 288 (the official per-category exception).
    - ``proxycore``: 256 / 224 with ``bilinear_gt0`` masks (the official ProxyCore masks).

    The official PatchCore/PBAS MVTec masks are ``bilinear_eq1``; pass it explicitly for parity.
    """
    if method == "patchcore" or method == "apc":
        return Preprocess(256, 224, "nearest")
    if method == "proxycore":
        return Preprocess(256, 224, "bilinear_gt0")
    if method == "pbas":
        if dataset in ("mvtec", "mpdd", "synthetic", "folder") and category in (
            "wood",
            "toothbrush",
        ):
            return Preprocess(int(288 * 8 / 7), 288, "nearest")
        return Preprocess(288, 288, "nearest")
    raise DatasetError(f"unknown method {method!r}; use one of {', '.join(METHODS)}.")


# --------------------------------------------------------------------------------------------
# Decoding.
# --------------------------------------------------------------------------------------------
def open_image(src: ImageSource, *, name: str | None = None) -> Image.Image:
    """:func:`jad.imaging.open_image`, raising :class:`DatasetError` (naming the file)."""
    try:
        return imaging.open_image(src, name=name)
    except imaging.ImageError as e:
        raise DatasetError(str(e)) from None


def to_rgb(img: Image.Image) -> Image.Image:
    """:func:`jad.imaging.to_rgb` (8-bit RGB), raising :class:`DatasetError`."""
    try:
        return imaging.to_rgb(img)
    except imaging.ImageError as e:
        raise DatasetError(str(e)) from None


def preprocess_image(src: ImageSource, pre: Preprocess) -> np.ndarray:
    """:func:`jad.imaging.preprocess_image` with ``pre``'s sizes: float32 ``[crop, crop, 3]``.

    Raises:
      DatasetError: missing, unreadable or corrupt file (naming it).
    """
    try:
        return imaging.preprocess_image(src, pre.resize, pre.crop)
    except imaging.ImageError as e:
        raise DatasetError(str(e)) from None


# --------------------------------------------------------------------------------------------
# Masks.
# --------------------------------------------------------------------------------------------
def mask_array(img: Image.Image) -> np.ndarray:
    """bool ``[H, W]``: True where the stored mask value is non-zero (see module docstring)."""
    mode = img.mode
    if mode in ("1", "L", "P", "I", "F") or mode.startswith("I;16"):
        a = np.asarray(img)
    elif mode in ("LA", "La", "PA"):
        a = np.asarray(img)[..., 0]
    elif mode in ("RGB", "RGBA", "RGBa", "RGBX"):
        a = np.asarray(img)[..., :3]
    else:
        a = np.asarray(img.convert("RGB"))
    binary = a != 0
    if binary.ndim == 3:
        binary = binary.any(axis=-1)
    return binary


def legacy_nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source indices of torch's legacy ``nearest`` resize: ``min(floor(dst * (in/out)), in-1)``
    with the scale and product in float32, as ATen computes them. int64 ``[n_out]``."""
    if n_out == n_in:
        return np.arange(n_out, dtype=np.int64)
    if n_out == 2 * n_in:
        return np.arange(n_out, dtype=np.int64) >> 1
    scale = np.float32(n_in) / np.float32(n_out)
    idx = np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(idx, n_in - 1)


def preprocess_mask(
    src: ImageSource | None,
    pre: Preprocess,
    image_size: tuple[int, int] | None = None,
    *,
    name: str | None = None,
) -> np.ndarray:
    """Ground-truth mask -> float32 ``{0, 1}`` ``[crop, crop]`` aligned with :func:`preprocess_image`.

    Args:
      src: the mask (path, bytes, PIL image, array) or None for a normal image (-> zeros).
      pre: the settings (``pre.mask_mode`` picks the resize rule).
      image_size: (width, height) of the image the mask belongs to; when given, a mask of another
        size raises :class:`DatasetError`. For ``src=None`` it is not needed.
      name: file name for error messages.
    """
    if src is None:
        return np.zeros((pre.crop, pre.crop), np.float32)
    img = open_image(src, name=name)
    if image_size is not None and tuple(img.size) != tuple(image_size):
        label = name or (os.fspath(src) if isinstance(src, str | os.PathLike) else "mask")
        raise DatasetError(
            f"mask {label} is {img.size[0]}x{img.size[1]} but its image is "
            f"{image_size[0]}x{image_size[1]}; masks must have the image's size."
        )
    binary = mask_array(img)
    h, w = binary.shape
    nw, nh = resized_size(w, h, pre.resize)
    left, top = imaging.crop_origin(nw, nh, pre.crop)
    if pre.mask_mode == "nearest":
        rows = legacy_nearest_indices(h, nh)[top : top + pre.crop]
        cols = legacy_nearest_indices(w, nw)[left : left + pre.crop]
        return binary[np.ix_(rows, cols)].astype(np.float32)
    m8 = Image.fromarray(binary.astype(np.uint8) * np.uint8(255), "L")
    a = np.asarray(m8.resize((nw, nh), Image.BILINEAR))[
        top : top + pre.crop, left : left + pre.crop
    ]
    positive = a == 255 if pre.mask_mode == "bilinear_eq1" else a > 0
    return positive.astype(np.float32)


def preprocess_example(
    image: ImageSource,
    mask: ImageSource | None,
    pre: Preprocess,
    *,
    name: str | None = None,
    mask_name: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One (image, mask) pair: image float32 ``[crop, crop, 3]``, mask float32 ``[crop, crop]``.

    The image is decoded once; the mask must have the image's size.
    """
    img = open_image(image, name=name)
    size = img.size
    x = preprocess_image(img, pre)
    m = preprocess_mask(mask, pre, size, name=mask_name)
    return x, m
