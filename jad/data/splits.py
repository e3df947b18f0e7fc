"""Derived splits: labelled anomalies moved out of the test set, a calibration holdout of the
normal training images.

**Labelled anomalies** (a first-class input for any method): a few defective test images moved
into training.

``labelled_anomalies(test_records, n, seed=..., category=...)`` picks ``n`` defective images of a
category's test split, with their masks, for a ``train_anomalous`` split: defect types in sorted
order, the images of each type in a seeded order, taken round-robin over the types (one of each
type, then a second of each, ...). The rest of the test split is the evaluation set, so a method
that uses the anomalies and one that does not are scored on exactly the same images. The choice
is a pure function of (file list, n, seed, category).

**Calibration holdout**: ``calibration_holdout(n_train, fraction, seed=..., category=...)``
reserves a seeded fraction (at least one image) of the normal *training* images for threshold
calibration (``"calibration"`` split); the ``"train"`` split then excludes them, so they never
build a memory bank or train a head.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from jad.data.errors import DatasetError
from jad.data.layouts import Record

SPLITS = ("train", "test", "train_anomalous", "calibration")


def labelled_anomalies(
    test: Sequence[Record], n: int, *, seed: int = 0, category: str = ""
) -> list[int]:
    """Positions (ascending) in ``test`` of the ``n`` images of the ``train_anomalous`` split.

    Only defective images with a ground-truth mask are eligible.

    Raises:
      DatasetError: ``n`` negative, or more than the eligible images (naming how many there are).
    """
    n = int(n)
    if n < 0:
        raise DatasetError(f"data.labelled_anomalies={n} must be >= 0.")
    if n == 0:
        return []
    by_type: dict[str, list[int]] = {}
    for i, r in enumerate(test):
        if r.label == 1 and r.mask_path is not None:
            by_type.setdefault(r.defect, []).append(i)
    eligible = sum(len(v) for v in by_type.values())
    if n > eligible:
        raise DatasetError(
            f"data.labelled_anomalies={n} but category {category!r} has only {eligible} defective "
            f"test images with masks; use at most {eligible}."
        )
    base = zlib.crc32(category.encode()) & 0x7FFFFFFF
    queues = []
    for t, defect in enumerate(sorted(by_type)):
        pos = np.asarray(by_type[defect])
        rng = np.random.default_rng([int(seed), 4, base, t])
        queues.append(list(pos[rng.permutation(len(pos))]))
    picked: list[int] = []
    while len(picked) < n:
        for q in queues:
            if q and len(picked) < n:
                picked.append(int(q.pop(0)))
    return sorted(picked)


def calibration_holdout(
    n_train: int, fraction: float, *, seed: int = 0, category: str = ""
) -> list[int]:
    """Positions (ascending) of the normal training images reserved for calibration.

    ``round(n_train * fraction)`` images, at least one when ``fraction > 0``, and always at least
    one image left for training.
    """
    fraction = float(fraction)
    if not 0.0 <= fraction < 1.0:
        raise DatasetError(f"calibration.holdout={fraction} must be in [0, 1).")
    if fraction == 0.0:
        return []
    if n_train < 2:
        raise DatasetError(
            f"category {category!r} has {n_train} training image(s): too few to hold out a "
            f"calibration image; set calibration.holdout=0 (no calibrated thresholds)."
        )
    k = min(max(1, int(round(n_train * fraction))), n_train - 1)
    base = zlib.crc32(category.encode()) & 0x7FFFFFFF
    perm = np.random.default_rng([int(seed), 6, base]).permutation(n_train)
    return sorted(int(i) for i in perm[:k])


def split_positions(
    split: str,
    test: Sequence[Record],
    n: int,
    *,
    seed: int = 0,
    category: str = "",
    n_train: int = 0,
    holdout: float = 0.0,
) -> list[int] | None:
    """Positions of ``split`` within the scanned split it is cut from (None = all of it):
    ``train`` / ``calibration`` within the training images, ``test`` / ``train_anomalous``
    within the test images."""
    if split not in SPLITS:
        raise DatasetError(f"split={split!r} is unknown; use one of {', '.join(SPLITS)}.")
    if split in ("train", "calibration"):
        cal = calibration_holdout(n_train, holdout, seed=seed, category=category)
        if split == "calibration":
            return cal
        if not cal:
            return None
        held = set(cal)
        return [i for i in range(n_train) if i not in held]
    if split == "test" and int(n) == 0:
        return None
    picked = labelled_anomalies(test, n, seed=seed, category=category)
    if split == "train_anomalous":
        return picked
    chosen = set(picked)
    return [i for i in range(len(test)) if i not in chosen]
