"""AnomalousPatchCore: losses vs numpy, frozen stages / BatchNorm, augmentation, exact resume, and
APC vs PatchCore on the identical reduced test set (small hard synthetic set, the tiny config)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jadtest import tiny_config

from jad.methods import apc
from jad.train_lib import checkpoint, runner
from jad.train_lib import parallel as parallel_lib
from jad.utils.errors import UserError


@pytest.fixture(scope="module")
def hard_small(tmp_path_factory):
    from jad.data import synthetic

    root = tmp_path_factory.mktemp("hard") / "data"
    # 64 px hard set: 6 train, 3 good + 3 x 4 defective test images per category
    return synthetic.generate(
        root, seed=0, mode="hard", image_size=64, n_train=6, n_test_good=3, n_per_defect=4
    )


def small_config(root, **overrides):
    """APC's tiny config on category 'disc': resnet_tiny, 64 px, 6 steps, 4 labelled anomalies."""
    return tiny_config("apc", root, **{"data.categories": "disc", **overrides})


# -- losses vs numpy -----------------------------------------------------------------------------


def _sig(x):
    return 1 / (1 + np.exp(-x))


def test_losses_match_numpy_references():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (3, 8, 8)).astype(np.float32)
    masks = (rng.random((3, 8, 8)) < 0.2).astype(np.float32)
    masks[0] = 0  # a normal image
    p = _sig(logits.astype(np.float64))
    pt = np.where(masks == 1, p, 1 - p)
    focal = (-((1 - pt) ** 2) * np.log(pt)).mean(axis=(1, 2))
    np.testing.assert_allclose(
        apc.focal_per_image(jnp.asarray(logits), jnp.asarray(masks)), focal, rtol=1e-5
    )
    w = np.array([0.0, 1.0, 1.0], np.float32)
    pa, ma = p[1:], masks[1:]
    dice = 1 - (2 * (pa * ma).sum() + 1) / (pa.sum() + ma.sum() + 1)
    got = apc.dice_from_sums(apc.dice_sums(jnp.asarray(logits), jnp.asarray(masks), jnp.asarray(w)))
    np.testing.assert_allclose(float(got), dice, rtol=1e-5)
    z = rng.normal(0, 3, 5).astype(np.float32)
    y = np.array([0, 1, 1, 0, 1])
    bce = -(
        y * np.log(_sig(z.astype(np.float64))) + (1 - y) * np.log(1 - _sig(z.astype(np.float64)))
    )
    np.testing.assert_allclose(apc.cls_loss(jnp.asarray(z), jnp.asarray(y)), bce, rtol=1e-5)
    a = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    b = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(
        apc.recon_per_image(jnp.asarray(a), jnp.asarray(b)),
        ((a - b) ** 2).mean(axis=(1, 2, 3)),
        rtol=1e-5,
    )


def test_augmentation_moves_image_and_mask_together():
    rng = np.random.default_rng(1)
    image = rng.normal(size=(16, 16, 3)).astype(np.float32)
    mask = np.zeros((16, 16), np.float32)
    mask[2:5, 3:9] = 1
    seen = set()
    for i in range(16):
        im, m = apc.augment(
            jax.random.key(i),
            jnp.asarray(image),
            jnp.asarray(mask),
            ("hflip", "vflip", "rot90"),
            jitter=0.0,
        )
        im, m = np.asarray(im), np.asarray(m)
        # the same geometric transform: find it among the 8 dihedral ones
        for k in range(4):
            for flip in (False, True):

                def t(x, k=k, flip=flip):
                    return np.rot90(x[:, ::-1] if flip else x, k)

                if np.array_equal(t(mask), m) and np.array_equal(t(image), im):
                    seen.add((k, flip))
        assert m.sum() == mask.sum()
    assert len(seen) >= 5  # several different transforms drawn
    im, m = apc.augment(
        jax.random.key(0), jnp.asarray(image), jnp.asarray(mask), (), jitter=0.1, jitter_p=1.0
    )
    assert np.array_equal(np.asarray(m), mask) and not np.allclose(np.asarray(im), image)
    assert (
        apc.CATEGORY_AUGMENTATION["metal_nut"] == "rot"
        and apc.CATEGORY_AUGMENTATION["cable"] == "none"
    )


# -- training ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(hard_small, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("apc")
    config = small_config(hard_small)
    return config, workdir, runner.train_and_evaluate(config, workdir, progress=False)


@pytest.mark.slow
def test_frozen_stages_and_frozen_batchnorm_stay_unchanged(hard_small, trained):
    config, workdir, _ = trained
    trainer = apc.APC(config)
    trainer.begin_category("disc")
    state, _ = checkpoint.Checkpoints(workdir / "disc" / "train", create=False).restore()
    module, init_vars = trainer.backbone
    p0, bs0 = init_vars["params"], init_vars["batch_stats"]
    params, stats = state["params"]["encoder"], state["batch_stats"]["encoder"]
    for name in params:
        same = all(
            np.array_equal(a, b)
            for a, b in zip(jax.tree.leaves(params[name]), jax.tree.leaves(p0[name]), strict=True)
        )
        if apc.is_trainable(name, "layer2"):
            assert not same, f"{name} should have been trained"
        else:
            assert same, f"{name} is frozen but changed"
    for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(bs0), strict=True):
        np.testing.assert_array_equal(a, b)  # encoder BatchNorm statistics never move


@pytest.mark.slow
def test_apc_and_patchcore_are_scored_on_the_same_reduced_test_set(hard_small, trained, tmp_path):
    config, workdir, res = trained
    d = res["details"]["disc"]
    assert d["steps"] == 6 and d["protocol"].startswith("last step")
    assert set(res["paper_view"]["disc"]) == {"AUROC_im", "F1_im", "AUROC_px", "F1_px"}
    assert res["paper_view"]["disc"]["AUROC_im"] == res["metrics"]["disc"]["image_auroc"]
    pc = tiny_config(
        "patchcore",
        config.data.root,
        **{
            "data.resize": 64,
            "data.crop": 64,
            "data.categories": "disc",
            "data.labelled_anomalies": 4,
            "eval.num_heatmaps": 0,
        },
    )
    assert pc.backbone.arch == config.backbone.arch
    res_pc = runner.train_and_evaluate(pc, tmp_path / "pc", progress=False)
    scored_apc = set(d["image_scores"])
    assert scored_apc == set(res_pc["details"]["disc"]["image_scores"])
    chosen = {f["path"] for f in d["labelled_anomalies"]["files"]}
    assert len(chosen) == 4 and not chosen & scored_apc
    assert d["labelled_anomalies"] == res_pc["details"]["disc"]["labelled_anomalies"]
    assert res["metrics"]["disc"] != res_pc["metrics"]["disc"]  # the tuned encoder does differ


@pytest.mark.slow
def test_interrupted_run_resumes_bit_identical(hard_small, trained, tmp_path, monkeypatch):
    """An in-process crash right after the step-3 checkpoint, then the same call again: the final
    model equals the uninterrupted run's bit for bit (the loop's SIGKILL test covers real kills)."""
    config, workdir, res = trained
    calls = {"n": 0}
    real = parallel_lib.DataParallel.__call__

    def crashing(self, state, batch):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("simulated crash")
        return real(self, state, batch)

    monkeypatch.setattr(parallel_lib.DataParallel, "__call__", crashing)
    with pytest.raises(KeyboardInterrupt):
        runner.train_and_evaluate(config, tmp_path / "w", progress=False)
    monkeypatch.setattr(parallel_lib.DataParallel, "__call__", real)
    again = runner.train_and_evaluate(config, tmp_path / "w", progress=False)
    assert again["details"]["disc"]["resumed_from_step"] == 3
    a, _ = checkpoint.restore(workdir / "disc" / "checkpoint")
    b, _ = checkpoint.restore(tmp_path / "w" / "disc" / "checkpoint")
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert again["details"]["disc"]["image_scores"] == res["details"]["disc"]["image_scores"]


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("apc.train_from", "layer9", "apc.train_from='layer9' is unknown"),
        ("apc.augment", "twirl", "apc.augment='twirl' is unknown"),
        ("apc.lr_head", 0.0, "apc.lr_head=0.0 must be a positive number"),
        ("apc.recon_on", "masked", "apc.recon_on='masked' is unknown"),
        ("data.labelled_anomalies", 0, "set data.labelled_anomalies > 0"),
        ("data.labelled_anomalies", 99, "has only 12 defective test images"),
        ("train.select", "test_official", "apc has no official code"),
    ],
)
def test_bad_config_values_are_one_line_errors(hard_small, tmp_path, key, value, match):
    from jad.data.errors import DatasetError

    with pytest.raises((UserError, DatasetError), match=match):
        runner.train_and_evaluate(
            small_config(hard_small, **{key: value}), tmp_path / "w", progress=False
        )
    assert not (tmp_path / "w" / "disc" / "checkpoint").exists()


@pytest.mark.slow
def test_export_round_trip(trained, tmp_path):
    from export_testutil import check_export

    _, workdir, _ = trained
    check_export(workdir, "disc", tmp_path / "apc.jax")


@pytest.mark.slow
def test_report_shows_the_training_history(trained):
    """The report (jad.report) holds results.json's numbers, the losses, the learning-rate
    schedule and the protocol."""
    from report_testutil import check_report

    _, workdir, results = trained
    page = check_report(workdir, results)
    assert "learning rates" in page
