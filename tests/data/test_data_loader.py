"""tfds prepare + read round trip, loader determinism, sharding, batching, decode errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from jad_data_testutil import rgb, save

from jad import data
from jad.data import DatasetError, Preprocess
from jad.data import synthetic as syn

PRE = Preprocess(40, 32)


@pytest.fixture(scope="module")
def syn_root(tmp_path_factory) -> Path:
    """The small synthetic set: per category 4 train, 2 good + 3 defective test, 64x64."""
    return syn.generate(tmp_path_factory.mktemp("syn") / "root", seed=0, small=True)


def _paths(batches):
    return [p for b in batches for p in b["path"].tolist()]


def _assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)  # exact


def test_batch_contents_and_dtypes(syn_root, tmp_path):
    loader = data.load(
        "synthetic", syn_root, "disc", "test", pre=PRE, batch_size=2, data_dir=tmp_path
    )
    assert loader.num_examples == 5 and len(loader) == 3
    batches = list(loader.epoch(0))
    assert [len(b["label"]) for b in batches] == [2, 2, 1]  # last partial batch kept
    b = batches[0]
    assert b["image"].dtype == np.float32 and b["image"].shape == (2, 32, 32, 3)
    assert b["mask"].dtype == np.float32 and b["mask"].shape == (2, 32, 32)
    assert b["label"].dtype == np.int32 and b["path"].dtype.kind == "U"
    labels = np.concatenate([b["label"] for b in batches])
    masks = np.concatenate([b["mask"] for b in batches])
    defects = np.concatenate([b["defect"] for b in batches])
    assert labels.tolist() == [0, 0, 1, 1, 1]  # good, good, missing, scratch, stain
    assert defects.tolist() == ["good", "good", "missing", "scratch", "stain"]
    assert all(masks[i].any() == bool(labels[i]) for i in range(5))
    assert np.concatenate([b["has_mask"] for b in batches]).all()


def test_tfds_round_trip_equals_direct_files(syn_root, tmp_path):
    for split in ("train", "test"):
        kw = dict(pre=Preprocess(40, 32, "bilinear_gt0"), batch_size=3)
        via_tfds = list(data.load("synthetic", syn_root, "weave", split, data_dir=tmp_path, **kw))
        direct = list(data.load("synthetic", syn_root, "weave", split, use_tfds=False, **kw))
        _assert_same_batches(via_tfds, direct)
    scanned = data.scan("synthetic", syn_root, "weave")["test"]
    assert _paths(direct) == [r.path for r in scanned]  # official order survives tfds
    copies = list((tmp_path / "synthetic").iterdir())
    assert len(copies) == 1 and copies[0].name.startswith("weave-")  # no temp dir left
    meta = json.loads((copies[0] / "source.json").read_text())
    assert meta["counts"] == {"train": 4, "test": 5} and meta["root"] == str(syn_root)


def test_prepared_once_and_rebuilt_when_the_tree_changes(tmp_path, mvtec_root):
    dd = tmp_path / "dd"
    p1 = data.prepare("folder", mvtec_root, "bottle", data_dir=dd)
    mtime = (p1.tfds_data_dir / "source.json").stat().st_mtime_ns
    p2 = data.prepare("folder", mvtec_root, "bottle", data_dir=dd)
    assert p2.tfds_data_dir == p1.tfds_data_dir
    assert (p2.tfds_data_dir / "source.json").stat().st_mtime_ns == mtime  # not rebuilt
    save(mvtec_root / "bottle" / "train" / "good" / "003.png", rgb(99))
    p3 = data.prepare("folder", mvtec_root, "bottle", data_dir=dd)
    assert p3.fingerprint != p1.fingerprint and not p1.tfds_data_dir.exists()  # stale copy gone
    assert len(p3.data_source("train")) == 4
    # touching a file (same size, new mtime) also changes the fingerprint
    f = mvtec_root / "bottle" / "test" / "good" / "000.png"
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    assert data.prepare("folder", mvtec_root, "bottle", data_dir=dd).fingerprint != p3.fingerprint


def test_jad_data_dir_has_one_meaning(monkeypatch, tmp_path):
    """$JAD_DATA_DIR is jad's cache root: tfds copies in tfds/, generated sets in synthetic/."""
    from jad.config_base import patchcore
    from jad.train_lib import runner

    monkeypatch.setenv("JAD_DATA_DIR", str(tmp_path / "env"))
    assert data.cache_dir() == tmp_path / "env"
    assert data.default_data_dir() == tmp_path / "env" / "tfds"
    config = patchcore("synthetic")
    config.data.synthetic_seed = 5
    monkeypatch.setattr(data.synthetic, "ensure", lambda path, seed, mode: path)  # no generation
    assert runner.dataset_root(config) == tmp_path / "env" / "synthetic" / "seed5"
    config.data.synthetic_mode = "hard"
    assert runner.dataset_root(config) == tmp_path / "env" / "synthetic" / "hard-seed5"
    monkeypatch.delenv("JAD_DATA_DIR")
    assert data.cache_dir() == Path("~/.cache/jad").expanduser()
    assert data.default_data_dir() == Path("~/.cache/jad/tfds").expanduser()


def test_all_layouts_round_trip_through_tfds(tmp_path, visa_root, btad_root, mvtec_root):
    for name, root, cat in (
        ("visa", visa_root, "pcb1"),
        ("btad", btad_root, "01"),
        ("mvtec", mvtec_root, "grid"),  # 3-channel class-id mask
        ("mvtec", mvtec_root, "bottle"),  # 0/255 and 0/1 masks
    ):
        via = list(data.load(name, root, cat, "test", pre=PRE, batch_size=4, data_dir=tmp_path))
        direct = list(data.load(name, root, cat, "test", pre=PRE, batch_size=4, use_tfds=False))
        _assert_same_batches(via, direct)
        labels = np.concatenate([b["label"] for b in via])
        masks = np.concatenate([b["mask"] for b in via])
        assert [bool(m.any()) for m in masks] == [bool(v) for v in labels], name


# ---------------------------------------------------------------------------------------------
# Order, shuffling, sharding.
# ---------------------------------------------------------------------------------------------
def _loader(syn_root, **kw):
    kw.setdefault("batch_size", 3)
    return data.load("synthetic", syn_root, "weave", "train", pre=PRE, use_tfds=False, **kw)


def test_shuffle_is_deterministic_per_seed_and_epoch(syn_root):
    a = _paths(_loader(syn_root, shuffle=True, seed=1).epoch(0))
    assert a == _paths(_loader(syn_root, shuffle=True, seed=1).epoch(0))
    orders = {tuple(_paths(_loader(syn_root, shuffle=True, seed=s).epoch(0))) for s in range(6)}
    assert len(orders) > 1  # different seeds give different orders (4! = 24 possible)
    lo = _loader(syn_root, shuffle=True, seed=1)
    epochs = [tuple(_paths(lo)) for _ in range(4)]  # iter() advances the epoch
    assert epochs[0] == tuple(a) and len(set(epochs)) > 1
    assert [tuple(_paths(lo.epoch(e))) for e in range(4)] == epochs
    assert sorted(a) == sorted(_paths(_loader(syn_root).epoch(0)))
    unshuffled = [_paths(_loader(syn_root).epoch(e)) for e in range(2)]
    assert unshuffled[0] == unshuffled[1] == sorted(unshuffled[0])


def test_sharding_covers_every_example_once(syn_root):
    for shuffle in (False, True):
        shards = [
            _paths(
                _loader(
                    syn_root, shuffle=shuffle, seed=3, num_shards=3, shard_index=i, batch_size=1
                ).epoch(2)
            )
            for i in range(3)
        ]
        # contiguous blocks of ceil(4 / 3) = 2, the last one padded: equal sizes for every host
        assert [len(s) for s in shards] == [2, 2, 2]
        loaders = [
            _loader(syn_root, shuffle=shuffle, seed=3, num_shards=3, shard_index=i, batch_size=1)
            for i in range(3)
        ]
        assert [lo.num_examples for lo in loaders] == [2, 2, 2]
        assert [lo.num_valid for lo in loaders] == [2, 2, 0]
        real = []
        for lo in loaders:
            for b in lo.epoch(2):
                real += [p for p, v in zip(b["path"], b["valid"], strict=True) if v]
        # without the padding: every example exactly once, in the single-host order
        single = _paths(_loader(syn_root, shuffle=shuffle, seed=3, batch_size=1).epoch(2))
        assert real == single


def test_drop_remainder_and_len(syn_root):
    lo = _loader(syn_root, batch_size=3, drop_remainder=True)
    batches = list(lo.epoch(0))
    assert len(lo) == 1 and len(batches) == 1 and batches[0]["image"].shape[0] == 3
    lo = _loader(syn_root, batch_size=8, drop_remainder=True)
    assert len(lo) == 0 and list(lo.epoch(0)) == []


@pytest.mark.parametrize(
    "backend,workers", [("grain", 0), ("grain", 2), ("threads", 0), ("threads", 3)]
)
def test_backends_and_worker_counts_agree(syn_root, backend, workers):
    ref = list(_loader(syn_root, shuffle=True, seed=5).epoch(1))
    got = list(
        _loader(syn_root, shuffle=True, seed=5, backend=backend, num_workers=workers).epoch(1)
    )
    _assert_same_batches(got, ref)


# ---------------------------------------------------------------------------------------------
# Bad input through the loader.
# ---------------------------------------------------------------------------------------------
def test_bad_arguments(syn_root):
    with pytest.raises(DatasetError, match="split='val'"):
        data.load("synthetic", syn_root, "weave", "val", pre=PRE)
    with pytest.raises(DatasetError, match="batch_size=0"):
        _loader(syn_root, batch_size=0)
    with pytest.raises(DatasetError, match=r"shard_index=2 must be in \[0, 2\)"):
        _loader(syn_root, num_shards=2, shard_index=2)
    with pytest.raises(DatasetError, match="backend='torch'"):
        _loader(syn_root, backend="torch")
    with pytest.raises(DatasetError, match="must be a jad.data.Preprocess"):
        data.load("synthetic", syn_root, "weave", "train", pre=(256, 224))
    with pytest.raises(DatasetError, match="unknown dataset name"):
        data.load("imagenet", syn_root, "weave", "train", pre=PRE)


def test_corrupt_image_named_when_read_and_when_prepared(tmp_path, mvtec_root):
    bad = mvtec_root / "bottle" / "train" / "good" / "001.png"
    bad.write_bytes(bad.read_bytes()[:60])
    lo = data.load("mvtec", mvtec_root, "bottle", "train", pre=PRE, use_tfds=False)
    with pytest.raises(DatasetError, match=r"cannot decode image file .*train/good/001.png"):
        list(lo)
    with pytest.raises(DatasetError, match=r"cannot decode image file .*train/good/001.png"):
        data.load("mvtec", mvtec_root, "bottle", "train", pre=PRE, data_dir=tmp_path)
    assert not list((tmp_path / "mvtec").glob(".tmp-*"))  # nothing half-written left behind


def test_mask_of_wrong_size_is_named(tmp_path, mvtec_root):
    save(
        mvtec_root / "bottle" / "ground_truth" / "crack" / "000_mask.png",
        np.zeros((5, 5), np.uint8),
    )
    with pytest.raises(
        DatasetError, match=r"mask .*crack/000_mask.png is 5x5 but its image .*is 32x24"
    ):
        data.load("mvtec", mvtec_root, "bottle", "test", pre=PRE, data_dir=tmp_path)
    lo = data.load("mvtec", mvtec_root, "bottle", "test", pre=PRE, use_tfds=False)
    with pytest.raises(DatasetError, match=r"crack/000_mask.png is 5x5 but its image is 32x24"):
        list(lo)


def test_folder_without_ground_truth_flags_missing_masks(tmp_path, mvtec_root):
    import shutil

    shutil.rmtree(mvtec_root / "bottle" / "ground_truth")
    batches = list(
        data.load("folder", mvtec_root / "bottle", None, "test", pre=PRE, data_dir=tmp_path)
    )
    has = np.concatenate([b["has_mask"] for b in batches])
    labels = np.concatenate([b["label"] for b in batches])
    assert has.tolist() == (labels == 0).tolist()
