"""One check for every method: ``jad.export`` round trip equals the in-process scores."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import ml_collections
import numpy as np

REPO = Path(__file__).resolve().parents[2]


def check_export(
    workdir: Path, category: str, out: Path, n_images: int = 3, exact: bool = True
) -> dict:
    """Exports ``category`` of ``workdir`` to ``out``, reloads it with ``jad.serving`` and compares
    with (a) the same scoring function jitted in process: bit-identical where the function scores
    one image at a time (PatchCore, APC: ``exact``); PBAS's and ProxyCore's heads run one matmul
    over all patches of the batch, and the artifact (lowered with a symbolic batch) compiles that
    matmul differently from a concrete-shape jit: measured max relative difference 9e-8 (PBAS),
    1.8e-6 .. 1.2e-5 (ProxyCore, depending on the bank), so rtol 1e-5 plus an absolute allowance
    of a few float32 steps of the largest squared bank norm (see below); and (b) the method's own
    ``predict``: rtol 1e-3. (b) is not bit-exact because in-process feature extraction is compiled
    with XLA:CPU's YNNPACK conv fusion off (jad's speed flag; an exported artifact is compiled by
    whoever loads it, with default options), and squared distances in the expansion form
    |q|^2 + |b|^2 - 2 q.b cancel: with random-weight features |q|^2 is ~1e5, where one float32 step
    is ~0.008 on a score of ~70, i.e. ~1e-4 relative per rounding difference in the features.
    Returns the header."""
    from jad import serving
    from jad.export import export_category
    from jad.methods.common import build_method
    from jad.train_lib import checkpoint, runner

    header = export_category(workdir, category, out)
    state, meta = checkpoint.restore(workdir / category / "checkpoint")
    config = ml_collections.ConfigDict(meta["config"])
    method = build_method(config)
    root = Path(config.data.root)
    batch = next(iter(runner.make_loader(config, root, category, "test").epoch(0)))
    images = batch["image"][:n_images]
    det = serving.load(out)
    got = det(images)
    assert got["image_scores"].shape == (len(images),)
    crop = header["preprocessing"]["crop"]
    assert got["anomaly_maps"].shape == (len(images), crop, crop)
    # Kernel-level rounding: squared distances |q|^2 + |b|^2 - 2 q.b cancel, so one float32
    # rounding difference anywhere upstream (another conv / matmul blocking for another batch or
    # a symbolic one) moves a score by about eps * |b|^2, however small the score itself. The
    # comparisons that are not bit-exact allow a few such steps of the largest bank row's norm.
    bank = state.get("bank") if isinstance(state, dict) else None
    step = 0.0 if bank is None else float(np.max(np.sum(np.square(np.asarray(bank)), axis=1)))
    atol = max(1e-6, 8 * float(np.finfo(np.float32).eps) * step)
    in_process = jax.jit(method.scoring_function(state))(images)
    if exact:
        np.testing.assert_array_equal(got["image_scores"], np.asarray(in_process[0]))
        np.testing.assert_array_equal(got["anomaly_maps"], np.asarray(in_process[1]))
    else:
        np.testing.assert_allclose(
            got["image_scores"], np.asarray(in_process[0]), rtol=1e-5, atol=atol
        )
        np.testing.assert_allclose(
            got["anomaly_maps"], np.asarray(in_process[1]), rtol=1e-5, atol=atol
        )
    pred = method.predict(state, images)
    np.testing.assert_allclose(got["image_scores"], pred.image_scores, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(got["anomaly_maps"], pred.anomaly_maps, rtol=1e-3, atol=1e-6)
    one = det(images[:1])  # the batch size is symbolic: any batch works
    np.testing.assert_allclose(one["image_scores"], got["image_scores"][:1], rtol=1e-6, atol=atol)
    if meta.get("calibration") is not None:
        assert (
            got["decisions"].tolist()
            == (got["image_scores"] > meta["calibration"]["image_threshold"]).tolist()
        )
    assert header["jax_version"] == jax.__version__ and header["method"] == method.name
    check_raw_images(det, method, state, runner.preprocess(config, category), root / category, out)
    return header


# Sizes of the raw test images: larger, smaller, non-square, so the resize and crop both act.
RAW_SIZES = ((131, 107), (80, 150), (200, 200))


def raw_image_files(category_root: Path, out_dir: Path, n: int = 3) -> list[str]:
    """The first ``n`` test images of a category, resized to :data:`RAW_SIZES` (PNG, RGB)."""
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    files = sorted((category_root / "test").rglob("*.png"))[:n]
    written = []
    for i, f in enumerate(files):
        img = Image.open(f).convert("RGB").resize(RAW_SIZES[i % len(RAW_SIZES)], Image.BICUBIC)
        img.save(out_dir / f"raw{i}_{f.parent.name}.png")
        written.append(str(out_dir / f"raw{i}_{f.parent.name}.png"))
    return written


def check_raw_images(det, method, state, pre, category_root: Path, out: Path) -> float:
    """The artifact on raw image files of other sizes equals ``jad.predict``'s computation on the
    same files (``jad.data.preprocess_image`` then ``method.predict``): the preprocessing is the
    same function, so the inputs are bit-identical; scores within (b)'s tolerance of
    :func:`check_export`. Returns the largest relative score difference."""
    from PIL import Image

    from jad.data import preprocess_image

    files = raw_image_files(category_root, out.parent / f"{out.stem}_raw")
    batch = np.stack([preprocess_image(f, pre) for f in files])
    arrays = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    np.testing.assert_array_equal(det.preprocess(files), batch)  # paths
    np.testing.assert_array_equal(det.preprocess(arrays), batch)  # uint8 arrays of any size
    got = det(arrays)
    np.testing.assert_array_equal(got["image_scores"], det(batch)["image_scores"])
    pred = method.predict(state, batch)
    np.testing.assert_allclose(got["image_scores"], pred.image_scores, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(got["anomaly_maps"], pred.anomaly_maps, rtol=1e-3, atol=1e-6)
    rel = np.abs(got["image_scores"] - pred.image_scores) / np.abs(pred.image_scores)
    print(
        f"\n{method.name}: artifact on raw images vs jad.predict's computation: max |diff| "
        f"{np.max(np.abs(got['image_scores'] - pred.image_scores)):.3g} "
        f"(relative {np.max(rel):.3g}) on scores {np.round(pred.image_scores, 4).tolist()}"
    )
    return float(np.max(rel))


LIGHT = """
import sys
for name in ("flax", "optax", "orbax", "tensorflow_datasets", "tensorflow", "torch", "grain",
             "ml_collections", "absl", "sklearn", "PIL"):
    sys.modules[name] = None  # any import of these now raises ImportError
import numpy as np
import jad.serving as s
det = s.load(sys.argv[1])
size = det.preprocessing["crop"]
out = det(np.zeros((2, size, size, 3), np.float32))
assert out["image_scores"].shape == (2,)
print("ok")
"""


def check_light_serving(path: Path) -> None:
    """``jad.serving`` runs a detector with jax + numpy only (the training stack is blocked)."""
    r = subprocess.run(
        [sys.executable, "-c", LIGHT, str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"},
    )
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]
