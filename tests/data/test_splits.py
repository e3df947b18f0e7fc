"""Labelled anomalies: the train_anomalous split and the reduced test set."""

from __future__ import annotations

import pytest

from jad import data
from jad.data.errors import DatasetError
from jad.data.layouts import Record


def _records():
    recs = [Record(f"/t/good/{i}.png", 0, None, "good", "c") for i in range(4)]
    for defect, k in (("crack", 5), ("hole", 2), ("stain", 3)):
        recs += [
            Record(f"/t/{defect}/{i}.png", 1, f"/m/{defect}/{i}.png", defect, "c") for i in range(k)
        ]
    recs.append(Record("/t/crack/nomask.png", 1, None, "crack", "c"))  # no mask: never picked
    return recs


def test_round_robin_over_defect_types_seeded_and_deterministic():
    recs = _records()
    picked = data.labelled_anomalies(recs, 7, seed=0, category="c")
    assert picked == sorted(picked) and len(set(picked)) == 7
    types = [recs[i].defect for i in picked]
    # round-robin: crack, hole, stain, crack, hole, stain, crack (hole has only 2)
    assert types.count("crack") == 3 and types.count("hole") == 2 and types.count("stain") == 2
    assert all(recs[i].label == 1 and recs[i].mask_path for i in picked)
    assert picked == data.labelled_anomalies(recs, 7, seed=0, category="c")  # same seed, same split
    others = {tuple(data.labelled_anomalies(recs, 7, seed=s, category="c")) for s in range(1, 6)}
    assert len(others | {tuple(picked)}) > 1  # the seed matters
    assert data.labelled_anomalies(recs, 0) == []


def test_too_many_or_negative_is_one_clear_error():
    with pytest.raises(DatasetError, match="has only 10 defective test images with masks"):
        data.labelled_anomalies(_records(), 11, category="c")
    with pytest.raises(DatasetError, match=">= 0"):
        data.labelled_anomalies(_records(), -1)


@pytest.mark.parametrize("use_tfds", [False, True])
def test_loader_splits_partition_the_test_set(mvtec_root, tmp_path, use_tfds):
    pre = data.Preprocess(32, 32)
    kw = dict(pre=pre, use_tfds=use_tfds, data_dir=tmp_path / "tfds", batch_size=4)
    full = data.load("mvtec", mvtec_root, "bottle", "test", **kw)
    n_def = sum(int(b["label"].sum()) for b in full.epoch(0))
    k = min(2, n_def)
    test = data.load("mvtec", mvtec_root, "bottle", "test", labelled_anomalies=k, **kw)
    anom = data.load("mvtec", mvtec_root, "bottle", "train_anomalous", labelled_anomalies=k, **kw)
    paths = lambda loader: [p for b in loader.epoch(0) for p in b["path"]]
    p_full, p_test, p_anom = paths(full), paths(test), paths(anom)
    assert len(p_anom) == k and not set(p_anom) & set(p_test)
    assert sorted(p_test + p_anom) == sorted(p_full)
    batch = next(iter(anom.epoch(0)))
    assert batch["label"].tolist() == [1] * k and batch["mask"].reshape(k, -1).max(1).min() == 1.0
