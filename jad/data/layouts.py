"""Layout scanners: turn a dataset folder on disk into ordered lists of :class:`Record`.

Pure Python (pathlib + csv); no image is decoded here. Supported layouts (``name``):

- ``"mvtec"``, ``"mpdd"``, ``"synthetic"``, ``"folder"``: ``<root>/<category>/train/good``,
  ``test/<defect>`` (``test/good`` = normal), ``ground_truth/<defect>/<stem>_mask.<ext>`` (a mask
  named ``<stem>.<ext>`` is accepted too). ``"folder"`` also accepts ``root`` itself being the
  category tree, and a tree without any ``ground_truth`` folder (image labels only).
- ``"btad"``: ``<root>/<product>/train/ok``, ``test/{ok,ko}``, ``ground_truth/ko/<stem>.{png,bmp}``.
- ``"visa"``: the raw VisA tree plus ``<root>/split_csv/1cls.csv`` (columns
  ``object,split,label,image,mask``; paths relative to ``root``; CRLF line endings are fine).

Order: MVTec-style trees are listed as the official loaders do, sorted defect folders then sorted
file names (``good`` sorts among the defect folders); VisA keeps the CSV row order. Masks are paired
with images by file stem (extensions case-insensitive), never by position. Normal images always get
``defect == "good"`` and ``mask_path is None``; anomalous ones keep their folder name as ``defect``
(BTAD ``"ko"``, VisA ``"anomaly"``).
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from jad.data.errors import DatasetError
from jad.imaging import IMAGE_EXTENSIONS

DATASETS = ("mvtec", "visa", "mpdd", "btad", "folder", "synthetic")

# Extensions accepted as images / masks: jad.imaging.IMAGE_EXTENSIONS (torchvision's list),
# compared case-insensitively. When one stem exists with several extensions, the first one in this order wins.
_EXT_PREFERENCE = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg", ".ppm", ".pgm", ".webp")

# Official category names (for documentation and builder configs; the disk is the authority).
KNOWN_CATEGORIES: dict[str, tuple[str, ...]] = {
    "mvtec": (
        "bottle",
        "cable",
        "capsule",
        "carpet",
        "grid",
        "hazelnut",
        "leather",
        "metal_nut",
        "pill",
        "screw",
        "tile",
        "toothbrush",
        "transistor",
        "wood",
        "zipper",
    ),
    "visa": (
        "candle",
        "capsules",
        "cashew",
        "chewinggum",
        "fryum",
        "macaroni1",
        "macaroni2",
        "pcb1",
        "pcb2",
        "pcb3",
        "pcb4",
        "pipe_fryum",
    ),
    "mpdd": (
        "bracket_black",
        "bracket_brown",
        "bracket_white",
        "connector",
        "metal_plate",
        "tubes",
    ),
    "btad": ("01", "02", "03"),
    "synthetic": ("weave", "disc"),
    "folder": (),
}

VISA_SPLIT_CSV = Path("split_csv") / "1cls.csv"


@dataclasses.dataclass(frozen=True)
class Record:
    """One image of a split.

    Attributes:
      path: the image file as found on disk (absolute path string).
      label: 0 = normal ("good"), 1 = anomalous.
      mask_path: the ground-truth mask file, or None (normal images; anomalous images of a
        ``folder`` tree without ``ground_truth``).
      defect: ``"good"`` for normal images, else the defect folder name (VisA: ``"anomaly"``).
      category: the category / product name.
    """

    path: str
    label: int
    mask_path: str | None
    defect: str
    category: str


# --------------------------------------------------------------------------------------------
# Small helpers.
# --------------------------------------------------------------------------------------------
def check_dataset_name(name: str) -> str:
    """Returns ``name`` if it is a supported dataset, else raises :class:`DatasetError`."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset name {name!r}; use one of: {', '.join(DATASETS)}.")
    return name


def _check_root(root: str | os.PathLike) -> Path:
    path = Path(root).expanduser()
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        raise DatasetError(
            f"dataset root {path} {what}; pass the folder that holds the category folders."
        )
    return path.absolute()


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()


def _images_in(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (hidden / non-image files skipped)."""
    return sorted((p for p in folder.iterdir() if _is_image(p)), key=lambda p: p.name)


def _subdirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _ext_rank(p: Path) -> int:
    ext = p.suffix.lower()
    return _EXT_PREFERENCE.index(ext) if ext in _EXT_PREFERENCE else len(_EXT_PREFERENCE)


def _stem_index(folder: Path) -> dict[str, Path]:
    """stem -> file for the images in ``folder``; one stem with several extensions -> png first."""
    index: dict[str, Path] = {}
    if not folder.is_dir():
        return index
    for p in sorted(_images_in(folder), key=_ext_rank):
        index.setdefault(p.stem, p)
    return index


def _resolve_case_insensitive(path: Path) -> Path | None:
    """``path`` if it exists, else the file in its folder with the same stem and an extension
    equal up to case (VisA's CSV says ``.JPG``; a re-extracted copy may say ``.jpg``)."""
    if path.is_file():
        return path
    if not path.parent.is_dir():
        return None
    want = path.name.lower()
    for p in path.parent.iterdir():
        if p.name.lower() == want and p.is_file():
            return p
    return None


# --------------------------------------------------------------------------------------------
# MVTec-style trees (mvtec, mpdd, synthetic, folder, btad).
# --------------------------------------------------------------------------------------------
_NORMAL_DIR = {"btad": "ok"}
_MASK_SUFFIXES = {"btad": ("", "_mask")}  # others: ("_mask", "")


def _scan_tree(name: str, cat_dir: Path, category: str) -> dict[str, list[Record]]:
    normal = _NORMAL_DIR.get(name, "good")
    suffixes = _MASK_SUFFIXES.get(name, ("_mask", ""))
    train_dir = cat_dir / "train" / normal
    if not train_dir.is_dir():
        raise DatasetError(
            f"{train_dir} not found; a {name} category needs train/{normal}, test/<defect> and "
            f"ground_truth/<defect> folders."
        )
    train = [Record(str(p), 0, None, "good", category) for p in _images_in(train_dir)]
    if not train:
        raise DatasetError(f"{train_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
    test_dir = cat_dir / "test"
    if not test_dir.is_dir():
        raise DatasetError(
            f"{test_dir} not found; a {name} category needs test/{normal} and test/<defect> folders."
        )
    gt_dir = cat_dir / "ground_truth"
    # Only a "folder" tree may come without masks (then masks are None for every image).
    masks_optional = name == "folder" and not gt_dir.is_dir()
    test: list[Record] = []
    for defect in _subdirs(test_dir):
        images = _images_in(test_dir / defect)
        if defect == normal:
            test += [Record(str(p), 0, None, "good", category) for p in images]
            continue
        if masks_optional:
            test += [Record(str(p), 1, None, defect, category) for p in images]
            continue
        index = _stem_index(gt_dir / defect)
        for p in images:
            mask = next((index[p.stem + s] for s in suffixes if p.stem + s in index), None)
            if mask is None:
                expected = gt_dir / defect / f"{p.stem}{suffixes[0]}.png"
                raise DatasetError(
                    f"no mask for defective image {p}; expected {expected} (any image extension)."
                )
            test.append(Record(str(p), 1, str(mask), defect, category))
    if not test:
        raise DatasetError(
            f"{test_dir} holds no test images; expected test/{normal} and/or test/<defect>."
        )
    return {"train": train, "test": test}


def _is_tree(path: Path) -> bool:
    return (path / "train").is_dir()


# --------------------------------------------------------------------------------------------
# VisA (raw tree + split_csv/1cls.csv).
# --------------------------------------------------------------------------------------------
def _read_visa_csv(root: Path) -> list[dict[str, str]]:
    csv_path = root / VISA_SPLIT_CSV
    if not csv_path.is_file():
        raise DatasetError(
            f"VisA split file {csv_path} not found; copy split_csv/1cls.csv from "
            f"github.com/amazon-science/spot-diff into the VisA root."
        )
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        need = {"object", "split", "label", "image", "mask"}
        if reader.fieldnames is None or not need <= {h.strip() for h in reader.fieldnames}:
            raise DatasetError(
                f"{csv_path} has header {reader.fieldnames}; expected columns {sorted(need)}."
            )
        return [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]


def _scan_visa(root: Path, category: str) -> dict[str, list[Record]]:
    rows = [r for r in _read_visa_csv(root) if r["object"] == category]
    out: dict[str, list[Record]] = {"train": [], "test": []}
    for row in rows:
        split, label_name = row["split"].lower(), row["label"].lower()
        if split not in out or label_name not in ("normal", "anomaly"):
            raise DatasetError(
                f"{root / VISA_SPLIT_CSV}: row {row} has split={row['split']!r}, "
                f"label={row['label']!r}; expected split train/test and label normal/anomaly."
            )
        image = _resolve_case_insensitive(root / row["image"])
        if image is None:
            raise DatasetError(f"VisA image {root / row['image']} (listed in 1cls.csv) not found.")
        if label_name == "normal":
            out[split].append(Record(str(image), 0, None, "good", category))
            continue
        if not row["mask"]:
            raise DatasetError(f"1cls.csv lists anomalous image {image} without a mask path.")
        mask = _resolve_case_insensitive(root / row["mask"])
        if mask is None:
            raise DatasetError(
                f"no mask for defective image {image}; expected {root / row['mask']}."
            )
        if mask.stem not in (image.stem, image.stem + "_mask"):
            raise DatasetError(
                f"1cls.csv pairs image {image} with mask {mask}, whose stem differs; fix the CSV row."
            )
        out[split].append(Record(str(image), 1, str(mask), "anomaly", category))
    for split in ("train", "test"):
        if not out[split]:
            raise DatasetError(
                f"VisA category {category!r} has no {split} rows in {root / VISA_SPLIT_CSV}."
            )
    return out


# --------------------------------------------------------------------------------------------
# Public API.
# --------------------------------------------------------------------------------------------
def list_categories(name: str, root: str | os.PathLike) -> list[str]:
    """Categories present under ``root`` for dataset ``name``, sorted.

    VisA: the objects named in ``split_csv/1cls.csv``. ``folder``: ``[root.name]`` if ``root`` is
    itself a category tree (has ``train/``), else its sub-folders that have ``train/``. Others:
    the sub-folders of ``root`` that have ``train/``.
    """
    check_dataset_name(name)
    root = _check_root(root)
    if name == "visa":
        cats = sorted({r["object"] for r in _read_visa_csv(root) if r["object"]})
    elif name == "folder" and _is_tree(root):
        cats = [root.name]
    else:
        if _is_tree(root):
            raise DatasetError(
                f"{root} looks like a single category (it has train/); pass its parent folder "
                f"{root.parent} as the {name} root."
            )
        cats = [c for c in _subdirs(root) if _is_tree(root / c)]
    if not cats:
        raise DatasetError(
            f"{root} holds no {name} category folders (<category>/train/...); point the root at "
            f"the folder that contains them."
        )
    return cats


def resolve_categories(
    name: str, root: str | os.PathLike, categories: str | Sequence[str]
) -> list[str]:
    """``"all"`` -> every category on disk; ``"a,b"`` or ``["a", "b"]`` -> checked list."""
    available = list_categories(name, root)
    if isinstance(categories, str):
        if categories == "all":
            return available
        categories = [c for c in categories.split(",") if c]
    cats = list(categories)
    for c in cats:
        if c not in available:
            raise DatasetError(
                f"unknown {name} category {c!r} under {Path(root)}; valid: {', '.join(available)}."
            )
    return cats


def scan(
    name: str, root: str | os.PathLike, category: str | None = None
) -> dict[str, list[Record]]:
    """Lists the train and test images of one category.

    Args:
      name: one of :data:`DATASETS`.
      root: the dataset root (the folder holding the category folders; for ``folder`` it may be
        the category tree itself, then ``category`` may be None or ``root``'s name).
      category: the category name; see :func:`list_categories`.

    Returns:
      ``{"train": [Record, ...], "test": [Record, ...]}`` in the official order.

    Raises:
      DatasetError: missing root, wrong layout, empty split, missing mask, unknown category.
    """
    check_dataset_name(name)
    root_path = _check_root(root)
    if name == "folder" and _is_tree(root_path) and category in (None, root_path.name):
        return _scan_tree(name, root_path, root_path.name)
    if category is None:
        raise DatasetError(
            f"a {name} category is required; valid: {', '.join(list_categories(name, root_path))}."
        )
    available = list_categories(name, root_path)
    if category not in available:
        raise DatasetError(
            f"unknown {name} category {category!r} under {root_path}; valid: {', '.join(available)}."
        )
    if name == "visa":
        return _scan_visa(root_path, category)
    return _scan_tree(name, root_path / category, category)
