"""Synthetic MVTec-layout generator: determinism, layout, masks, ensure(), CLI."""

from __future__ import annotations

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
