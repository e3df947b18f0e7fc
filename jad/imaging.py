"""The image transform of training, prediction and exported detectors (numpy + Pillow only).

One implementation: ``jad.data`` (training, evaluation, ``jad.predict``) and ``jad.serving`` (the
exported detectors) both call :func:`preprocess_image`, so they cannot drift. It stays outside
the exported JAX function because the transform is Pillow's fixed-point antialiased bilinear
resize of uint8 pixels, which ``jax.image.resize`` does not reproduce bit for bit.

Bit-exact with ``torchvision.transforms`` ``Resize(resize)`` -> ``CenterCrop(crop)`` ->
``ToTensor`` -> ``Normalize(ImageNet)`` on a PIL image:

1. decode with Pillow and convert to 8-bit RGB (see :func:`to_rgb` for odd modes);
2. resize the shorter side to ``resize`` with PIL BILINEAR (antialiased, uint8 result), the
   longer side to ``int(resize * long / short)``;
3. centre crop ``crop`` x ``crop`` with ``top = int(round((h - crop) / 2))`` (same for left);
4. ``/ 255`` in float32, then ``(x - mean) / std`` -> float32 ``[crop, crop, 3]`` (NHWC).
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from jad.utils.errors import UserError

IMAGENET_MEAN = np.asarray((0.485, 0.456, 0.406), dtype=np.float32)
IMAGENET_STD = np.asarray((0.229, 0.224, 0.225), dtype=np.float32)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

ImageSource = Image.Image | str | os.PathLike | bytes | np.ndarray


class ImageError(UserError, ValueError):
    """An image that cannot be read or converted (one sentence naming it)."""


def open_image(src: ImageSource, *, name: str | None = None) -> Image.Image:
    """Opens and fully decodes an image; a PIL image or HWC/HW uint8 array is passed through.

    Args:
      src: a path, encoded bytes, a ``PIL.Image.Image`` or a uint8 numpy array.
      name: the file name used in error messages (defaults to ``src`` when it is a path).

    Raises:
      ImageError: missing, unreadable or corrupt file (naming it).
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
        raise ImageError(f"image file {label} does not exist.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(
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
        raise ImageError(
            f"cannot convert image mode {mode!r} to RGB ({e}); save the file as 8-bit RGB or grey."
        ) from None


def resized_size(width: int, height: int, resize: int) -> tuple[int, int]:
    """(width, height) after torchvision ``Resize(resize)``: shorter side -> ``resize``."""
    if height <= width:
        return int(resize * width / height), resize
    return resize, int(resize * height / width)


def crop_origin(width: int, height: int, crop: int) -> tuple[int, int]:
    """(left, top) of torchvision's ``CenterCrop(crop)``."""
    return int(round((width - crop) / 2.0)), int(round((height - crop) / 2.0))


def preprocess_image(src: ImageSource, resize: int, crop: int) -> np.ndarray:
    """The transform of one image (module docstring).

    Args:
      src: path, encoded bytes, PIL image or uint8 array (HWC RGB or HW grey).
      resize: the shorter side after resizing (px).
      crop: the side of the centre crop (px), ``<= resize``.

    Returns:
      float32 ``[crop, crop, 3]``, ImageNet-normalised, NHWC without the batch axis.
    """
    img = to_rgb(open_image(src))
    nw, nh = resized_size(img.width, img.height, resize)
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = crop_origin(nw, nh, crop)
    a = np.asarray(img)[top : top + crop, left : left + crop]
    x = a.astype(np.float32) / np.float32(255.0)
    return (x - IMAGENET_MEAN) / IMAGENET_STD
