"""Layout scanners: counts, labels, order, mask pairing by stem, and every bad-layout error."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from jad_data_testutil import rgb, save, square_mask

from jad import data
from jad.data import DatasetError


def _rel(records, root):
    return [str(Path(r.path).relative_to(root)) for r in records]


def test_mvtec_counts_labels_order_and_mask_pairing(mvtec_root):
    assert data.list_categories("mvtec", mvtec_root) == ["bottle", "grid"]
    s = data.scan("mvtec", mvtec_root, "bottle")
    # hidden files and non-images are skipped
    assert _rel(s["train"], mvtec_root) == [f"bottle/train/good/{i:03d}.png" for i in range(3)]
    # official order: sorted defect folders ("good" sorts among them), sorted files
    assert _rel(s["test"], mvtec_root) == [
        "bottle/test/broken/000.png",
        "bottle/test/broken/001.png",
        "bottle/test/crack/000.png",
        "bottle/test/good/000.png",
        "bottle/test/good/001.png",
    ]
    assert [r.label for r in s["test"]] == [1, 1, 1, 0, 0]
    assert [r.defect for r in s["test"]] == ["broken", "broken", "crack", "good", "good"]
    for r in s["test"]:
        if r.label:
            assert Path(r.mask_path).name == Path(r.path).stem + "_mask.png"
            assert Path(r.mask_path).parent.name == r.defect
        else:
            assert r.mask_path is None
    assert all(r.category == "bottle" and Path(r.path).is_absolute() for r in s["test"])


def test_mask_paired_by_stem_not_by_position(mvtec_root):
    gt = mvtec_root / "bottle" / "ground_truth" / "broken"
    save(gt / "0000_extra_mask.png", square_mask())  # sorts first; must not shift the pairing
    s = data.scan("mvtec", mvtec_root, "bottle")
    broken = [r for r in s["test"] if r.defect == "broken"]
    assert [Path(r.mask_path).name for r in broken] == ["000_mask.png", "001_mask.png"]


def test_mask_extension_case_insensitive_and_plain_stem(mvtec_root):
    gt = mvtec_root / "bottle" / "ground_truth" / "crack"
    (gt / "000_mask.png").rename(gt / "000.PNG")  # MPDD-style "<stem>.<EXT>" name
    s = data.scan("mpdd", mvtec_root, "bottle")
    crack = [r for r in s["test"] if r.defect == "crack"]
    assert Path(crack[0].mask_path).name == "000.PNG"


def test_visa_csv_crlf_jpg_and_split(visa_root):
    assert data.list_categories("visa", visa_root) == ["candle", "pcb1"]
    s = data.scan("visa", visa_root, "pcb1")
    assert len(s["train"]) == 3 and all(r.label == 0 for r in s["train"])
    # CSV order is kept: the two anomalies, then the normal test image
    assert [r.label for r in s["test"]] == [1, 1, 0]
    assert [r.defect for r in s["test"]] == ["anomaly", "anomaly", "good"]
    assert all(r.path.endswith(".JPG") for r in s["train"] + s["test"])
    assert [Path(r.mask_path).name for r in s["test"][:2]] == ["000.png", "001.png"]
    assert not any("\r" in r.path or "\r" in (r.mask_path or "") for r in s["test"])


def test_visa_extension_case_on_disk_differs_from_csv(visa_root):
    img = visa_root / "candle" / "Data" / "Images" / "Anomaly" / "000.JPG"
    img.rename(img.with_suffix(".jpg"))
    s = data.scan("visa", visa_root, "candle")
    assert s["test"][0].path.endswith("Anomaly/000.jpg")


def test_btad_ok_ko_mixed_extensions(btad_root):
    assert data.list_categories("btad", btad_root) == ["01", "03"]
    for prod, mask_ext in (("01", ".png"), ("03", ".bmp")):
        s = data.scan("btad", btad_root, prod)
        assert len(s["train"]) == 2
        assert [Path(r.path).name for r in s["test"]] == [
            "0000.bmp",
            "0001.bmp",
            "0000.bmp",
            "0001.png",
        ]
        assert [r.label for r in s["test"]] == [1, 1, 0, 0]
        assert [r.defect for r in s["test"]] == ["ko", "ko", "good", "good"]
        assert [Path(r.mask_path).suffix for r in s["test"][:2]] == [mask_ext, mask_ext]


def test_folder_tree_as_root_and_without_ground_truth(mvtec_root):
    tree = mvtec_root / "bottle"
    assert data.list_categories("folder", tree) == ["bottle"]
    s = data.scan("folder", tree)
    assert len(s["train"]) == 3 and len(s["test"]) == 5
    assert data.scan("folder", mvtec_root, "grid")["test"][0].defect == "cut"
    shutil.rmtree(tree / "ground_truth")
    s = data.scan("folder", tree, "bottle")
    assert [r.mask_path for r in s["test"]] == [None] * 5
    assert [r.label for r in s["test"]] == [1, 1, 1, 0, 0]


def test_synthetic_is_mvtec_layout(mvtec_root):
    assert data.scan("synthetic", mvtec_root, "grid")["test"][0].mask_path.endswith("_mask.png")


def test_resolve_categories(mvtec_root):
    assert data.resolve_categories("mvtec", mvtec_root, "all") == ["bottle", "grid"]
    assert data.resolve_categories("mvtec", mvtec_root, "grid") == ["grid"]
    assert data.resolve_categories("mvtec", mvtec_root, ["bottle", "grid"]) == ["bottle", "grid"]
    with pytest.raises(DatasetError, match="valid: bottle, grid"):
        data.resolve_categories("mvtec", mvtec_root, "bottle,zipper")


# ---------------------------------------------------------------------------------------------
# Bad input: one DatasetError (a ValueError) naming the path and what was expected.
# ---------------------------------------------------------------------------------------------
def test_error_is_value_error():
    assert issubclass(DatasetError, ValueError)


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset name 'mvtec_ad'.*mvtec, visa"):
        data.scan("mvtec_ad", tmp_path, "bottle")


def test_missing_root(tmp_path):
    with pytest.raises(DatasetError, match=f"{tmp_path / 'nope'} does not exist"):
        data.list_categories("mvtec", tmp_path / "nope")


def test_unknown_category_lists_valid_ones(mvtec_root):
    with pytest.raises(DatasetError, match="unknown mvtec category 'zipper'.*valid: bottle, grid"):
        data.scan("mvtec", mvtec_root, "zipper")


def test_root_pointing_at_a_category(mvtec_root):
    with pytest.raises(DatasetError, match="looks like a single category.*parent"):
        data.list_categories("mvtec", mvtec_root / "bottle")


def test_wrong_layout_no_train_good(mvtec_root):
    (mvtec_root / "bottle" / "train" / "good").rename(mvtec_root / "bottle" / "train" / "ok")
    with pytest.raises(DatasetError, match=r"train/good not found"):
        data.scan("mvtec", mvtec_root, "bottle")


def test_root_without_any_category(tmp_path):
    (tmp_path / "x" / "random").mkdir(parents=True)
    with pytest.raises(DatasetError, match="holds no mvtec category folders"):
        data.list_categories("mvtec", tmp_path / "x")


def test_empty_category(mvtec_root):
    for f in (mvtec_root / "bottle" / "train" / "good").glob("*.png"):
        f.unlink()
    with pytest.raises(DatasetError, match=r"bottle/train/good holds no images"):
        data.scan("mvtec", mvtec_root, "bottle")


def test_missing_test_folder(mvtec_root):
    shutil.rmtree(mvtec_root / "grid" / "test")
    with pytest.raises(DatasetError, match=r"grid/test not found"):
        data.scan("mvtec", mvtec_root, "grid")


def test_missing_mask_names_image_and_expected_mask(mvtec_root):
    (mvtec_root / "bottle" / "ground_truth" / "broken" / "001_mask.png").unlink()
    with pytest.raises(
        DatasetError, match=r"no mask for defective image .*broken/001.png.*001_mask"
    ):
        data.scan("mvtec", mvtec_root, "bottle")


def test_visa_missing_csv(visa_root):
    (visa_root / "split_csv" / "1cls.csv").unlink()
    with pytest.raises(DatasetError, match=r"split_csv/1cls.csv not found.*spot-diff"):
        data.scan("visa", visa_root, "candle")


def test_visa_missing_image_and_mask(visa_root):
    (visa_root / "candle" / "Data" / "Masks" / "Anomaly" / "001.png").unlink()
    with pytest.raises(DatasetError, match=r"no mask for defective image .*Anomaly/001.JPG"):
        data.scan("visa", visa_root, "candle")
    (visa_root / "pcb1" / "Data" / "Images" / "Normal" / "0001.JPG").unlink()
    with pytest.raises(DatasetError, match=r"VisA image .*0001.JPG .*not found"):
        data.scan("visa", visa_root, "pcb1")


def test_visa_bad_header(visa_root):
    (visa_root / "split_csv" / "1cls.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DatasetError, match="expected columns"):
        data.list_categories("visa", visa_root)


def test_btad_missing_mask(btad_root):
    for f in (btad_root / "03" / "ground_truth" / "ko").iterdir():
        f.unlink()
    with pytest.raises(DatasetError, match=r"no mask for defective image .*ko/0000.bmp"):
        data.scan("btad", btad_root, "03")


def test_category_required(mvtec_root):
    with pytest.raises(DatasetError, match="category is required; valid: bottle, grid"):
        data.scan("mvtec", mvtec_root)


def test_fixture_images_are_what_they_claim(mvtec_root):
    # Guard for the fixtures above: the 0/1 and class-id masks really hold those values.
    from PIL import Image

    crack = np.asarray(Image.open(mvtec_root / "bottle/ground_truth/crack/000_mask.png"))
    cut = np.asarray(Image.open(mvtec_root / "grid/ground_truth/cut/000_mask.png"))
    assert set(np.unique(crack)) == {0, 1} and set(np.unique(cut)) == {0, 3} and cut.ndim == 3
    assert rgb(0).shape == (24, 32, 3)
