"""Image and mask preprocessing: the official PatchCore/PBAS transform, with Pillow + numpy.

Image path (bit-exact with ``torchvision.transforms`` ``Resize(resize)`` -> ``CenterCrop(crop)`` ->
``ToTensor`` -> ``Normalize(ImageNet)`` on a PIL image, checked against the golden
``make_inputs.preprocess``):

1. decode with Pillow and convert to 8-bit RGB (see :func:`to_rgb` for odd modes);
2. resize the shorter side to ``resize`` with PIL BILINEAR (antialiased, uint8 result), the
   longer side to ``int(resize * long / short)``;
3. centre crop ``crop`` x ``crop`` with ``top = int(round((h - crop) / 2))`` (same for left);
4. ``/ 255`` in float32, then ``(x - mean) / std`` -> float32 ``[crop, crop, 3]`` (NHWC).

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
import io
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from jad.data.errors import DatasetError

IMAGENET_MEAN = np.asarray((0.485, 0.456, 0.406), dtype=np.float32)
IMAGENET_STD = np.asarray((0.229, 0.224, 0.225), dtype=np.float32)
MASK_MODES = ("nearest", "bilinear_eq1", "bilinear_gt0")
METHODS = ("patchcore", "pbas", "proxycore", "apc")

ImageSource = Image.Image | str | os.PathLike | bytes | np.ndarray


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
    """Opens and fully decodes an image; a PIL image or HWC/HW uint8 array is passed through.

    Args:
      src: a path, encoded bytes, a ``PIL.Image.Image`` or a uint8 numpy array.
      name: the file name used in error messages (defaults to ``src`` when it is a path).

    Raises:
      DatasetError: missing, unreadable or corrupt file (naming it).
    """
    if isinstance(src, Image.Image):
        return src
    if isinstance(src, np.ndarray):
        return Image.fromarray(np.ascontiguousarray(src))
    label = name or (os.fspath(src) if not isinstance(src, bytes) else "<bytes>")
    try:
        img = Image.open(io.BytesIO(src) if isinstance(src, bytes) else src)
        img.load()
    except FileNotFoundError:
        raise DatasetError(f"image file {label} does not exist.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DatasetError(
            f"cannot decode image file {label} ({type(e).__name__}: {e}); replace or remove it."
        ) from None
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB, like the official ``.convert("RGB")``, plus sane handling of 16-bit/float modes.

    - 1, L, P, LA, PA, RGBA, CMYK, YCbCr, ...: Pillow's ``convert("RGB")`` (alpha is dropped,
      grey is replicated to 3 channels), exactly as the official loaders.
    - 16-bit (``I;16*``) and 32-bit integer (``I``, which Pillow uses for 16-bit PNG/TIFF): the
      value is taken as 16-bit and rescaled, ``round(v * 255 / 65535)`` (``I`` clipped to
      [0, 65535] first). Pillow's own conversion would clip everything above 255 to white.
    - ``F`` (float): clipped to [0, 255] and rounded (Pillow's semantics).
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(img).astype(np.int64)
        a = np.clip(a, 0, 65535)
        a8 = ((a * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(a8, "L").convert("RGB")
    if mode == "F":
        a8 = np.clip(np.rint(np.asarray(img, dtype=np.float32)), 0, 255).astype(np.uint8)
        return Image.fromarray(a8, "L").convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as e:
        raise DatasetError(
            f"cannot convert image mode {mode!r} to RGB ({e}); save the file as 8-bit RGB or grey."
        ) from None


def resized_size(width: int, height: int, resize: int) -> tuple[int, int]:
    """(width, height) after torchvision ``Resize(resize)``: shorter side -> ``resize``."""
    if height <= width:
        return int(resize * width / height), resize
    return resize, int(resize * height / width)


def _crop_origin(width: int, height: int, crop: int) -> tuple[int, int]:
    """(left, top) of torchvision's ``CenterCrop(crop)``."""
    return int(round((width - crop) / 2.0)), int(round((height - crop) / 2.0))


def preprocess_image(src: ImageSource, pre: Preprocess) -> np.ndarray:
    """Official transform of one image.

    Args:
      src: path, encoded bytes, PIL image or uint8 array (HWC RGB or HW grey).
      pre: the settings.

    Returns:
      float32 ``[pre.crop, pre.crop, 3]``, ImageNet-normalised, NHWC without the batch axis.
    """
    img = to_rgb(open_image(src))
    nw, nh = resized_size(img.width, img.height, pre.resize)
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = _crop_origin(nw, nh, pre.crop)
    a = np.asarray(img)[top : top + pre.crop, left : left + pre.crop]
    x = a.astype(np.float32) / np.float32(255.0)
    return (x - IMAGENET_MEAN) / IMAGENET_STD


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
    left, top = _crop_origin(nw, nh, pre.crop)
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
