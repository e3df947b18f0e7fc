"""TFDS builders with a manual directory (like ``imagenet2012``), one per dataset layout.

No TensorFlow needed: ``file_format="array_record"``, features are plain tensors/text, images and
masks are stored as their *encoded file bytes* (PNG/JPEG/BMP/TIFF as found on disk) and decoded
with Pillow when read. Categories are builder configs. Records keep the disk order (tfds's
shuffling is disabled; the example key is the position in the official order).

Features of every example::

    image      bytes   the image file, encoded
    mask       bytes   the mask file, encoded (b"" when there is none)
    label      int32   0 normal, 1 anomalous
    defect     text    "good" or the defect folder name
    path       text    absolute image path at preparation time
    mask_path  text    absolute mask path ("" when none)

:func:`prepare` is what :func:`jad.data.load` uses. It re-scans the tree, fingerprints the file
list (relative path, size and mtime of every image, mask and the VisA CSV, plus the builder
version) and keeps one prepared copy per fingerprint at
``<data_dir>/<dataset>/<category>-<fingerprint[:16]>/`` (a tfds ``data_dir``). A changed tree has
a new fingerprint, so a stale copy is never read; after a successful rebuild the older copies of the
same root and category are deleted. A copy is prepared in a temporary sibling folder and renamed
into place, so a half-written copy is never visible. ``data_dir`` defaults to
``<jad.data.cache_dir()>/tfds`` (``$JAD_DATA_DIR/tfds``, else ``~/.cache/jad/tfds``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from jad.data.cache import cache_dir
from jad.data.errors import DatasetError
from jad.data.layouts import KNOWN_CATEGORIES, Record, check_dataset_name, scan
from jad.data.preprocess import open_image
from jad.utils.atomic import atomic_dir

_log = logging.getLogger(__name__)
_VERSION = "1.0.0"
_INSTRUCTIONS = """\
Download the dataset yourself (its licence forbids redistribution) and pass its root folder as
``manual_dir`` (``jad.data.load(..., root=...)`` does this for you). Expected layouts are listed in
``jad/data/layouts.py``."""


def default_data_dir() -> Path:
    """Where prepared copies live by default: ``<jad.data.cache_dir()>/tfds``."""
    return cache_dir() / "tfds"


def _config_name(category: str) -> str:
    """A tfds-safe config name for a category (folder names may hold anything)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", category)
    if safe != category or not safe:
        safe = f"{safe}_{hashlib.sha1(category.encode()).hexdigest()[:6]}"
    return safe


class _JadBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base class; subclasses set ``DATASET`` (a :data:`jad.data.layouts.DATASETS` name)."""

    VERSION = tfds.core.Version(_VERSION)
    RELEASE_NOTES = {_VERSION: "Encoded image/mask bytes, label, defect, paths; official order."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
    DATASET = ""

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path | None:
        # tfds's own lookup goes through `importlib_resources`, which tfds does not install.
        return epath.Path(inspect.getfile(cls))

    # tfds prints these two lines to stdout; jad logs them instead.
    def _log_download_bytes(self) -> None:
        _log.info("preparing %s/%s in %s", self.name, self.builder_config.name, self.data_dir)

    def _log_download_done(self) -> None:
        _log.info("prepared %s/%s in %s", self.name, self.builder_config.name, self.data_dir)

    def __init__(self, *args, records: dict[str, list[Record]] | None = None, **kwargs):
        self._records = records
        kwargs.setdefault("file_format", "array_record")
        super().__init__(*args, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"jad {self.DATASET} category, encoded files (decode with Pillow).",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(), dtype=np.object_),
                    "mask": tfds.features.Tensor(shape=(), dtype=np.object_),
                    "label": tfds.features.Tensor(shape=(), dtype=np.int32),
                    "defect": tfds.features.Text(),
                    "path": tfds.features.Text(),
                    "mask_path": tfds.features.Text(),
                }
            ),
            supervised_keys=None,
            disable_shuffling=True,  # keep the official order (the key is the position in it)
        )

    def _split_generators(self, dl_manager):
        records = self._records
        if records is None:
            category = self.builder_config.description or self.builder_config.name
            records = scan(self.DATASET, dl_manager.manual_dir, category)
        return {split: self._generate_examples(records[split]) for split in ("train", "test")}

    def _generate_examples(self, records: list[Record]):
        for i, rec in enumerate(records):
            image = Path(rec.path).read_bytes()
            mask = Path(rec.mask_path).read_bytes() if rec.mask_path else b""
            size = open_image(image, name=rec.path).size  # also rejects unreadable files
            if mask:
                msize = open_image(mask, name=rec.mask_path).size
                if msize != size:
                    raise DatasetError(
                        f"mask {rec.mask_path} is {msize[0]}x{msize[1]} but its image {rec.path} "
                        f"is {size[0]}x{size[1]}; masks must have the image's size."
                    )
            yield (
                i,
                {
                    "image": image,
                    "mask": mask,
                    "label": np.int32(rec.label),
                    "defect": rec.defect,
                    "path": rec.path,
                    "mask_path": rec.mask_path or "",
                },
            )


def _configs(dataset: str) -> list[tfds.core.BuilderConfig]:
    return [
        tfds.core.BuilderConfig(name=_config_name(c), description=c)
        for c in KNOWN_CATEGORIES[dataset]
    ]


class JadMvtec(_JadBuilder):
    """MVTec AD (15 categories), ``<root>/<category>/{train,test,ground_truth}``."""

    DATASET = "mvtec"
    BUILDER_CONFIGS = _configs("mvtec")


class JadVisa(_JadBuilder):
    """VisA (12 categories), raw tree + ``split_csv/1cls.csv``."""

    DATASET = "visa"
    BUILDER_CONFIGS = _configs("visa")


class JadMpdd(_JadBuilder):
    """MPDD (6 categories), MVTec-style layout."""

    DATASET = "mpdd"
    BUILDER_CONFIGS = _configs("mpdd")


class JadBtad(_JadBuilder):
    """BTAD (products 01, 02, 03), ``train/ok``, ``test/{ok,ko}``, ``ground_truth/ko``."""

    DATASET = "btad"
    BUILDER_CONFIGS = _configs("btad")


class JadFolder(_JadBuilder):
    """Any MVTec-style tree; categories are created on the fly."""

    DATASET = "folder"


class JadSynthetic(_JadBuilder):
    """The synthetic set of :mod:`jad.data.synthetic` (MVTec layout)."""

    DATASET = "synthetic"
    BUILDER_CONFIGS = _configs("synthetic")


BUILDERS: dict[str, type[_JadBuilder]] = {
    cls.DATASET: cls for cls in (JadMvtec, JadVisa, JadMpdd, JadBtad, JadFolder, JadSynthetic)
}


def _config_for(cls: type[_JadBuilder], category: str) -> str | tfds.core.BuilderConfig:
    """The predefined config's name, or a new config for a category found only on disk."""
    name = _config_name(category)
    if any(c.name == name for c in cls.BUILDER_CONFIGS):
        return name
    return tfds.core.BuilderConfig(name=name, description=category)


# --------------------------------------------------------------------------------------------
# Fingerprint + prepare + read.
# --------------------------------------------------------------------------------------------
def fingerprint(name: str, root: str | os.PathLike, records: dict[str, list[Record]]) -> str:
    """sha256 hex of the builder version, root, and (split, path, label, defect, size, mtime) of
    every image and mask (and VisA's split CSV)."""
    root = Path(root).expanduser().absolute()
    h = hashlib.sha256()
    h.update(json.dumps([name, _VERSION, str(root)]).encode())

    def stat(path: str | None) -> list:
        if not path:
            return []
        st = os.stat(path)
        return [path, st.st_size, st.st_mtime_ns]

    for split in ("train", "test"):
        for r in records[split]:
            row = [split, r.label, r.defect, r.category, *stat(r.path), *stat(r.mask_path)]
            h.update(json.dumps(row).encode())
    if name == "visa":
        h.update(json.dumps(stat(str(root / "split_csv" / "1cls.csv"))).encode())
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A prepared copy: ``tfds_data_dir`` holds ``<builder name>/<config>/<version>/``."""

    dataset: str
    category: str
    root: str
    fingerprint: str
    tfds_data_dir: Path

    def builder(self) -> _JadBuilder:
        cls = BUILDERS[self.dataset]
        with _quiet():
            return cls(config=_config_for(cls, self.category), data_dir=str(self.tfds_data_dir))

    def data_source(self, split: str):
        """The tfds random-access source of ``split`` ("train" / "test")."""
        return self.builder().as_data_source(split=split)


@contextlib.contextmanager
def _quiet():
    """Hides tfds's progress bars and info/warning logs (restored afterwards)."""
    from tensorflow_datasets.core.utils import tqdm_utils

    was = getattr(tqdm_utils, "_active", True)
    log = logging.getLogger("absl")
    level = log.level
    tfds.display_progress_bar(False)
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        tfds.display_progress_bar(was)
        log.setLevel(level)


def prepare(
    name: str,
    root: str | os.PathLike,
    category: str | None,
    *,
    data_dir: str | os.PathLike | None = None,
    records: dict[str, list[Record]] | None = None,
) -> Prepared:
    """Prepares (once per fingerprint) the tfds copy of one category and returns where it is.

    Args:
      name: dataset name (see :data:`jad.data.layouts.DATASETS`).
      root: the user's dataset root (tfds's ``manual_dir``).
      category: category name (``folder`` may pass None when ``root`` is the tree).
      data_dir: where prepared copies live (default :func:`default_data_dir`).
      records: a scan result to reuse (else the tree is scanned).
    """
    check_dataset_name(name)
    root = Path(root).expanduser().absolute()
    if records is None:
        records = scan(name, root, category)
    category = records["train"][0].category
    fp = fingerprint(name, root, records)
    base = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    base = base.absolute() / name
    stem = _config_name(category)
    final = base / f"{stem}-{fp[:16]}"
    info = dict(dataset=name, category=category, root=str(root), fingerprint=fp)
    if (final / "source.json").is_file():
        return Prepared(**info, tfds_data_dir=final)
    with atomic_dir(final, keep_existing=lambda p: (p / "source.json").is_file()) as tmp:
        cls = BUILDERS[name]
        with _quiet():
            builder = cls(config=_config_for(cls, category), data_dir=str(tmp), records=records)
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=str(root))
            )
        shutil.rmtree(tmp / "downloads", ignore_errors=True)
        counts = {s: len(records[s]) for s in ("train", "test")}
        (tmp / "source.json").write_text(
            json.dumps({**info, "counts": counts, "created": time.time()}, indent=1)
        )
    # Delete older copies of the same root + category (their tree has changed since).
    for old in base.glob(f"{stem}-*"):
        if old == final:
            continue
        try:
            meta = json.loads((old / "source.json").read_text())
        except (OSError, ValueError):
            continue
        if meta.get("root") == str(root) and meta.get("category") == category:
            shutil.rmtree(old, ignore_errors=True)
    return Prepared(**info, tfds_data_dir=final)
