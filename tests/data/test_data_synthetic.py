"""Synthetic MVTec-layout generator: determinism, layout, masks, ensure(), CLI; easy and hard mode."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from jad import data
from jad.data import DatasetError
from jad.data import synthetic as syn


def _files(root):
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_gives_byte_identical_files(tmp_path):
    a = _files(syn.generate(tmp_path / "a", seed=3, small=True))
    b = _files(syn.generate(tmp_path / "b", seed=3, small=True))
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    c = _files(syn.generate(tmp_path / "c", seed=4, small=True))
    pngs = [k for k in a if k.endswith(".png")]
    assert sum(a[k] != c[k] for k in pngs) > len(pngs) // 2  # another seed, other images


def test_layout_counts_and_masks(tmp_path):
    root = syn.generate(tmp_path / "s", seed=0, small=True, n_per_defect=2)
    assert data.list_categories("synthetic", root) == ["disc", "weave"]
    for cat in syn.CATEGORIES:
        s = data.scan("synthetic", root, cat)
        assert len(s["train"]) == 4 and len(s["test"]) == 2 + 3 * 2
        assert sorted({r.defect for r in s["test"]}) == sorted(("good", *syn.DEFECTS[cat]))
        for r in s["test"]:
            img = np.asarray(Image.open(r.path))
            assert img.shape == (64, 64, 3) and img.dtype == np.uint8
            if r.label == 0:
                continue
            m = np.asarray(Image.open(r.mask_path))
            assert m.dtype == np.uint8 and set(np.unique(m)) == {0, 255}
            area = (m > 0).mean()
            assert 0.005 < area < 0.15, (r.path, area)  # a few % of the image
            # inside the central region, so a resize-256/crop-224 keeps it
            assert (
                not m[:6].any() and not m[-6:].any() and not m[:, :6].any() and not m[:, -6:].any()
            )


def test_defects_change_the_pixels_under_their_mask(tmp_path):
    root = syn.generate(tmp_path / "s", seed=1, small=True)
    for cat in syn.CATEGORIES:
        good = np.stack(
            [
                np.asarray(Image.open(r.path), np.float32)
                for r in data.scan("synthetic", root, cat)["train"]
            ]
        )
        for r in data.scan("synthetic", root, cat)["test"]:
            if r.label:
                img = np.asarray(Image.open(r.path), np.float32)
                m = np.asarray(Image.open(r.mask_path)) > 0
                # mean colour distance to the normal images' colour at those pixels (0..441)
                d = np.linalg.norm(img[m] - good[:, m].mean(0), axis=-1).mean()
                assert d > 40, (r.path, d)


def test_ensure_reuses_regenerates_and_refuses_foreign_folders(tmp_path):
    root = syn.ensure(tmp_path / "e", small=True, categories=["weave"])
    f = root / "weave" / "train" / "good" / "000.png"
    mtime = f.stat().st_mtime_ns
    assert syn.ensure(root, small=True, categories=["weave"]) == root
    assert f.stat().st_mtime_ns == mtime  # complete: untouched
    f.unlink()  # incomplete -> regenerated
    syn.ensure(root, small=True, categories=["weave"])
    assert f.is_file()
    syn.ensure(root, small=True, categories=["weave", "disc"])  # other parameters -> rewritten
    assert (root / "disc").is_dir()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("precious")
    with pytest.raises(DatasetError, match="exists and is not a jad synthetic dataset"):
        syn.ensure(foreign, small=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (syn.ensure(empty, small=True) / "disc").is_dir()


def test_parameter_errors(tmp_path):
    with pytest.raises(DatasetError, match="unknown synthetic category 'cable'"):
        syn.generate(tmp_path / "x", categories=["cable"])
    with pytest.raises(DatasetError, match="n_train=0 must be >= 1"):
        syn.generate(tmp_path / "x", n_train=0)


def test_cli(tmp_path, capsys):
    assert syn.main(["--out", str(tmp_path / "cli"), "--small", "--categories", "disc"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cli")
    assert data.list_categories("synthetic", tmp_path / "cli") == ["disc"]
    assert syn.main(["--out", str(tmp_path / "bad"), "--categories", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unknown synthetic category") and err.count("\n") == 1


@pytest.mark.slow
def test_default_size_set(tmp_path):
    # The README demo set: 256 px, 24 train, 10 good + 12 defective test images per category.
    root = syn.generate(tmp_path / "full", seed=0)
    for cat in syn.CATEGORIES:
        s = data.scan("synthetic", root, cat)
        assert len(s["train"]) == 24 and len(s["test"]) == 22
        assert sum(r.label for r in s["test"]) == 12
        assert Image.open(s["test"][0].path).size == (256, 256)


# --------------------------------------------------------------------------------------------
# Easy mode stays as it was before hard mode existed; hard mode.
# --------------------------------------------------------------------------------------------
# The marker parameters of easy trees written before hard mode existed: a match means that
# `ensure` keeps those trees instead of regenerating them.
EASY_PARAMS = {
    "format": 1,
    "seed": 0,
    "categories": ["weave", "disc"],
    "image_size": 256,
    "n_train": 24,
    "n_test_good": 10,
    "n_per_defect": 4,
}
# sha256 of the decoded pixels of a few easy `--small` seed-0 files (independent of zlib), as
# written before hard mode existed. A change here means existing easy trees no longer match
# what `generate` writes (if numpy ever changes its PCG64 `integers` stream, update knowingly).
EASY_SMALL_PIXELS = {
    "weave/test/hole/000.png": "b4aca8fbac20e1b9",
    "weave/ground_truth/hole/000_mask.png": "5fbe57387b14eb44",
    "disc/train/good/003.png": "71f4e1852abf45cc",
    "disc/test/missing/000.png": "307fa18cffa5ca6c",
}


def test_easy_mode_params_marker_and_pixels_unchanged(tmp_path):
    assert syn._params(0, None, False, {}) == EASY_PARAMS
    assert syn._params(0, None, False, {}, "easy") == EASY_PARAMS
    root = syn.generate(tmp_path / "e", small=True)  # default mode
    meta = json.loads((root / syn.MARKER).read_text())
    assert meta["params"] == {**EASY_PARAMS, "image_size": 64, "n_train": 4, "n_test_good": 2,
                              "n_per_defect": 1}  # fmt: skip
    assert "mode" not in meta["params"]
    for rel, digest in EASY_SMALL_PIXELS.items():
        pixels = np.asarray(Image.open(root / rel)).tobytes()
        assert hashlib.sha256(pixels).hexdigest()[:16] == digest, rel
    assert _files(syn.generate(tmp_path / "e2", small=True, mode="easy")) == _files(root)


def test_hard_mode_is_deterministic_and_differs_from_easy(tmp_path):
    a = _files(syn.generate(tmp_path / "a", seed=3, small=True, mode="hard"))
    b = _files(syn.generate(tmp_path / "b", seed=3, small=True, mode="hard"))
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    pngs = [k for k in a if k.endswith(".png") and "ground_truth" not in k]
    c = _files(syn.generate(tmp_path / "c", seed=4, small=True, mode="hard"))
    assert all(a[k] != c[k] for k in pngs)  # another seed, other images
    e = _files(syn.generate(tmp_path / "e", seed=3, small=True))
    assert e.keys() == a.keys() and all(a[k] != e[k] for k in pngs)  # same layout, other images


def test_hard_mode_layout_counts_and_marker(tmp_path):
    assert syn.HARD_DEFAULTS == dict(image_size=256, n_train=32, n_test_good=16, n_per_defect=8)
    p = syn._params(5, None, False, {}, "hard")
    assert p == {**EASY_PARAMS, "seed": 5, "mode": "hard", **syn.HARD_DEFAULTS}
    assert syn._params(5, None, False, {"n_train": 3}, "hard")["n_train"] == 3
    root = syn.generate(tmp_path / "h", small=True, mode="hard", n_per_defect=2)
    assert json.loads((root / syn.MARKER).read_text())["params"]["mode"] == "hard"
    for cat in syn.CATEGORIES:
        s = data.scan("synthetic", root, cat)
        assert len(s["train"]) == 4 and len(s["test"]) == 2 + 3 * 2
        assert sorted({r.defect for r in s["test"]}) == sorted(("good", *syn.DEFECTS[cat]))
        for r in s["test"]:
            assert np.asarray(Image.open(r.path)).shape == (64, 64, 3)
            if r.label:
                m = np.asarray(Image.open(r.mask_path))
                assert m.dtype == np.uint8 and set(np.unique(m)) == {0, 255}


@pytest.mark.parametrize("size", [64, 128])
def test_hard_masks_are_exactly_the_changed_pixels_and_small(size):
    border = (size * 3) // 32  # a 256 -> 224 centre crop drops 1/16 per side
    for cat in syn.CATEGORIES:
        for kind in syn.DEFECTS[cat]:
            for i in range(3):
                clean, img, mask = syn._hard_sample(cat, 0, 2, i, kind, s=size)
                assert img.shape == (size, size, 3) and img.dtype == np.uint8
                # the mask is exactly where the defect changed the (lit) defect-free image
                np.testing.assert_array_equal((clean != img).any(-1), mask, err_msg=f"{cat}/{kind}")
                area = mask.mean()
                assert 0.0015 < area < 0.02, (cat, kind, i, area)  # ~0.2-1.5 % of the image
                assert not mask[:border].any() and not mask[-border:].any()
                assert not mask[:, :border].any() and not mask[:, -border:].any()
                # drawn relative to the texture (easy mode paints colours over it); a missing
                # part shows the background, as in easy mode
                change = np.abs(img[mask].astype(int) - clean[mask]).max(-1).mean()
                assert 3 < change < (140 if kind == "missing" else 85), (cat, kind, i, change)
    clean, img, mask = syn._hard_sample("weave", 0, 1, 0, s=size)  # a normal image
    assert mask is None and clean is img


def test_hard_normal_images_vary():
    # lighting / colour jitter: the mean colour of normal images differs from image to image
    means = np.array([syn._hard_sample("disc", 0, 0, i, s=64)[1].mean((0, 1)) for i in range(6)])
    assert (means.std(0) > 1).all()
    # the disc is not always at the same place
    discs = [syn._disc_hard(syn._rng(0, i), 64).centre for i in range(6)]
    assert len(set(discs)) > 1


def test_ensure_switches_mode_and_default_root(tmp_path):
    root = syn.ensure(tmp_path / "m", small=True, categories=["disc"])
    f = root / "disc" / "train" / "good" / "000.png"
    easy = f.read_bytes()
    syn.ensure(root, small=True, categories=["disc"], mode="hard")  # other mode -> rewritten
    assert f.read_bytes() != easy
    mtime = f.stat().st_mtime_ns
    syn.ensure(root, small=True, categories=["disc"], mode="hard")
    assert f.stat().st_mtime_ns == mtime
    assert syn.default_root(tmp_path, 3, "easy") == tmp_path / "synthetic" / "seed3"
    assert syn.default_root(tmp_path, 3, "hard") == tmp_path / "synthetic" / "hard-seed3"


def test_bad_mode(tmp_path, capsys):
    for call in (
        lambda: syn.generate(tmp_path / "x", small=True, mode="medium"),
        lambda: syn.ensure(tmp_path / "x", small=True, mode="medium"),
        lambda: syn.default_root(tmp_path, 0, "medium"),
    ):
        with pytest.raises(
            DatasetError, match=r"^unknown synthetic mode 'medium'; valid: easy, hard\.$"
        ):
            call()
    assert not (tmp_path / "x").exists()
    assert syn.main(["--out", str(tmp_path / "bad"), "--mode", "medium"]) == 1
    err = capsys.readouterr().err
    assert err == "error: unknown synthetic mode 'medium'; valid: easy, hard.\n"


def test_cli_mode_hard(tmp_path, capsys):
    out = tmp_path / "cli"
    assert syn.main(["--out", str(out), "--mode", "hard", "--small", "--categories", "weave"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    params = json.loads((out / syn.MARKER).read_text())["params"]
    assert params["mode"] == "hard" and params["categories"] == ["weave"]
    assert data.list_categories("synthetic", out) == ["weave"]


@pytest.mark.slow
def test_default_size_hard_set(tmp_path):
    # 256 px, 32 train, 16 good + 3 x 8 defective test images per category.
    root = syn.generate(tmp_path / "full", seed=0, mode="hard")
    for cat in syn.CATEGORIES:
        s = data.scan("synthetic", root, cat)
        assert len(s["train"]) == 32 and len(s["test"]) == 40
        assert sum(r.label for r in s["test"]) == 24
        assert Image.open(s["test"][0].path).size == (256, 256)
