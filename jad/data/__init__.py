"""Datasets (MVTec AD, VisA, MPDD, BTAD, folder, synthetic), preprocessing and the input pipeline.

Typical use::

    from jad import data
    pre = data.preprocess_for("patchcore", "mvtec", "bottle")  # or data.Preprocess(256, 224)
    train = data.load("mvtec", "/data/mvtec", "bottle", "train", pre=pre, batch_size=8)
    for batch in train:  # {"image": f32[B,224,224,3], "mask": f32[B,224,224], "label": i32[B], ...}
        ...

Modules: ``layouts`` (scanners, :class:`Record`), ``preprocess`` (official transform, masks),
``builders`` (tfds builders, imported lazily: it pulls in tensorflow_datasets), ``loader``
(:class:`Loader`, :func:`load`), ``synthetic`` (generated MVTec-layout data), ``errors``.
"""

from __future__ import annotations

from jad.data.cache import cache_dir
from jad.data.errors import DatasetError
from jad.data.layouts import (
    DATASETS,
    IMAGE_EXTENSIONS,
    KNOWN_CATEGORIES,
    Record,
    list_categories,
    resolve_categories,
    scan,
)
from jad.data.loader import Loader, collate, decode_record, decode_tfds, load
from jad.data.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MASK_MODES,
    Preprocess,
    mask_array,
    preprocess_example,
    preprocess_for,
    preprocess_image,
    preprocess_mask,
    to_rgb,
)
from jad.data.splits import labelled_anomalies

__all__ = [
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "KNOWN_CATEGORIES",
    "MASK_MODES",
    "DatasetError",
    "Loader",
    "Preprocess",
    "Record",
    "cache_dir",
    "collate",
    "decode_record",
    "decode_tfds",
    "list_categories",
    "labelled_anomalies",
    "load",
    "mask_array",
    "prepare",
    "preprocess_example",
    "preprocess_for",
    "preprocess_image",
    "preprocess_mask",
    "resolve_categories",
    "scan",
    "to_rgb",
]


def __getattr__(name: str):
    # tensorflow_datasets is imported only when the tfds side is used; `synthetic` stays a lazy
    # submodule so that `python -m jad.data.synthetic` runs without a double-import warning.
    if name == "synthetic":
        import importlib

        return importlib.import_module("jad.data.synthetic")
    if name in ("prepare", "default_data_dir", "Prepared", "fingerprint", "BUILDERS"):
        from jad.data import builders

        return getattr(builders, name)
    raise AttributeError(f"module 'jad.data' has no attribute {name!r}")
