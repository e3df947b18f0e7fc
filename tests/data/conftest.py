"""Tiny on-disk dataset trees for the jad.data tests (built with numpy + Pillow in tmp dirs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from jad_data_testutil import rgb, save, square_mask


@pytest.fixture
def mvtec_root(tmp_path: Path) -> Path:
    """MVTec layout, 2 categories. ``bottle``: train 3, test good 2, broken 2 (+ ``_mask`` 0/255),
    crack 1 (mask stored as 0/1). ``grid``: grey images, train 2, test good 1, cut 1 (class-id
    mask value 3, 3-channel RGB)."""
    root = tmp_path / "mvtec"
    b = root / "bottle"
    for i in range(3):
        save(b / "train" / "good" / f"{i:03d}.png", rgb(i))
    for i in range(2):
        save(b / "test" / "good" / f"{i:03d}.png", rgb(10 + i))
        save(b / "test" / "broken" / f"{i:03d}.png", rgb(20 + i))
        save(b / "ground_truth" / "broken" / f"{i:03d}_mask.png", square_mask())
    save(b / "test" / "crack" / "000.png", rgb(30))
    save(b / "ground_truth" / "crack" / "000_mask.png", square_mask(value=1))
    (b / "train" / "good" / ".DS_Store").write_bytes(b"junk")
    (b / "train" / "good" / "notes.txt").write_text("not an image")
    g = root / "grid"
    grey = rgb(40)[..., 0]
    for i in range(2):
        save(g / "train" / "good" / f"{i:03d}.png", grey, "L")
    save(g / "test" / "good" / "000.png", grey, "L")
    save(g / "test" / "cut" / "000.png", grey, "L")
    m3 = np.repeat(square_mask(value=3)[..., None], 3, axis=2)
    save(g / "ground_truth" / "cut" / "000_mask.png", m3)
    return root


@pytest.fixture
def visa_root(tmp_path: Path) -> Path:
    """Raw VisA tree + split_csv/1cls.csv with CRLF and ``.JPG`` names; masks hold class ids."""
    root = tmp_path / "visa"
    rows = ["object,split,label,image,mask"]
    for cat in ("candle", "pcb1"):
        d = root / cat / "Data"
        for i in range(3):
            save(d / "Images" / "Normal" / f"{i:04d}.JPG", rgb(i, 30, 40), fmt="JPEG")
            rows.append(f"{cat},train,normal,{cat}/Data/Images/Normal/{i:04d}.JPG,")
        save(d / "Images" / "Normal" / "0100.JPG", rgb(7, 30, 40), fmt="JPEG")
        for i in range(2):
            save(d / "Images" / "Anomaly" / f"{i:03d}.JPG", rgb(50 + i, 30, 40), fmt="JPEG")
            save(d / "Masks" / "Anomaly" / f"{i:03d}.png", square_mask(30, 40, value=i + 1))
            rows.append(
                f"{cat},test,anomaly,{cat}/Data/Images/Anomaly/{i:03d}.JPG,"
                f"{cat}/Data/Masks/Anomaly/{i:03d}.png"
            )
        rows.append(f"{cat},test,normal,{cat}/Data/Images/Normal/0100.JPG,")
    (root / "split_csv").mkdir(parents=True)
    (root / "split_csv" / "1cls.csv").write_bytes(("\r\n".join(rows) + "\r\n").encode())
    return root


@pytest.fixture
def btad_root(tmp_path: Path) -> Path:
    """BTAD: product 01 = bmp images / png masks; 03 = bmp images / bmp masks."""
    root = tmp_path / "btad"
    for prod, img_ext, mask_ext in (("01", "bmp", "png"), ("03", "bmp", "bmp")):
        p = root / prod
        for i in range(2):
            save(p / "train" / "ok" / f"{i:04d}.{img_ext}", rgb(i))
        save(p / "test" / "ok" / f"0000.{img_ext}", rgb(5))
        save(p / "test" / "ok" / "0001.png", rgb(6))  # mixed extensions in one folder
        for i in range(2):
            save(p / "test" / "ko" / f"{i:04d}.{img_ext}", rgb(10 + i))
            save(p / "ground_truth" / "ko" / f"{i:04d}.{mask_ext}", square_mask())
    return root
