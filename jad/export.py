"""Export a trained category as one file: ``python -m jad.export --workdir=W --category=C --out=detector.jax``.

The file holds the method's scoring function (preprocessed images in, image scores and anomaly
maps out) serialised with ``jax.export``: the batch size is symbolic, the backbone, heads and memory
bank are baked in as constants, and the kNN stays blocked (one image at a time), so memory is
bounded. A JSON header carries the preprocessing, the weights' provenance, the calibration
(thresholds, normalisation), the dataset licence note and the jax version. Load it with
``jad.serving.load(path)(images)``, which needs only jax and numpy for preprocessed images, and
Pillow for raw ones (any size; it applies jad's own transform, :mod:`jad.imaging`).
"""

from __future__ import annotations

import time
from pathlib import Path

from absl import flags

from jad.train_lib import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A folder written by jad.train.", required=True)
_CATEGORY = flags.DEFINE_string("category", None, "The category to export (if several).")
_OUT = flags.DEFINE_string("out", None, "Output file (default: <workdir>/<category>.jax).")

LICENCES = {
    "mvtec": "MVTec AD: CC BY-NC-SA 4.0 (non-commercial)",
    "mpdd": "MPDD: CC BY-NC-SA 4.0 (non-commercial)",
    "btad": "BTAD: CC BY-NC-SA 4.0 (non-commercial)",
    "visa": "VisA: CC BY 4.0",
    "synthetic": "jad synthetic data (generated, no licence restrictions)",
    "folder": "your own data: its licence applies",
}


def export_category(workdir: Path, category: str, out: Path) -> dict:
    """Writes the detector of ``category`` to ``out`` (atomically); returns its header."""
    import jax
    import jax.numpy as jnp
    import ml_collections
    from jax import export as jax_export

    from jad import __version__
    from jad.methods.common import build_method
    from jad.serving import pack
    from jad.train_lib import checkpoint, runner
    from jad.utils.atomic import write_bytes
    from jad.utils.errors import UserError

    state, meta = checkpoint.restore(Path(workdir) / category / "checkpoint")
    config = ml_collections.ConfigDict(meta["config"])
    method = build_method(config)
    if not hasattr(method, "scoring_function"):
        raise UserError(f"method {method.name} cannot be exported (no scoring_function)")
    fn = method.scoring_function(state)
    pre = runner.preprocess(config, category)
    (b,) = jax_export.symbolic_shape("b")
    spec = jax.ShapeDtypeStruct((b, pre.crop, pre.crop, 3), jnp.float32)
    exported = jax_export.export(jax.jit(fn))(spec)
    from jad.imaging import IMAGENET_MEAN, IMAGENET_STD

    header = {
        "format": 1,
        "method": method.name,
        "category": category,
        "workdir": str(Path(workdir).absolute()),
        "preprocessing": {
            "resize": pre.resize,
            "crop": pre.crop,
            "mean": [float(x) for x in IMAGENET_MEAN],
            "std": [float(x) for x in IMAGENET_STD],
            "layout": "float32 NHWC, RGB / 255, normalised with mean and std",
            "raw_images": "jad.serving applies jad.imaging.preprocess_image(image, resize, crop)",
            "resample": "PIL bilinear (antialiased) resize of the shorter side, centre crop",
        },
        "outputs": {
            "image_scores": "[B] float32",
            "anomaly_maps": f"[B, {pre.crop}, {pre.crop}] float32",
        },
        "backbone": meta.get("backbone"),
        "calibration": meta.get("calibration"),
        "protocol": meta.get("fit_info", {}).get("protocol"),
        "dataset": str(config.data.name),
        "dataset_licence": LICENCES.get(str(config.data.name), "see the dataset's licence"),
        "jax_version": jax.__version__,
        "jad_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_bytes(out, pack(header, exported.serialize()))
    return header


def main(argv: list[str]) -> int:
    del argv
    from jad.train_lib.runner import pick_category

    workdir = Path(_WORKDIR.value)
    from jad.utils.errors import UserError

    if not workdir.is_dir():
        raise UserError(f"workdir {workdir} does not exist (train first with python -m jad.train)")
    category = pick_category(workdir, _CATEGORY.value)
    out = Path(_OUT.value) if _OUT.value else workdir / f"{category}.jax"
    header = export_category(workdir, category, out)
    size = out.stat().st_size / 2**20
    print(
        f"wrote {out} ({size:.1f} MiB): {header['method']} / {category}, input "
        f"[B, {header['preprocessing']['crop']}, {header['preprocessing']['crop']}, 3]"
    )
    return 0


if __name__ == "__main__":
    cli.run(main, needs_config=False)
