"""Time anomalib 2.7's PatchCore on an MVTec-layout folder (runs INSIDE /tmp/anomalib-venv).

This is a measurement harness, not part of jad: it imports anomalib, never jad, and never
modifies anomalib. What it runs is what an anomalib user runs (``Patchcore`` + ``MVTecAD``
datamodule + ``Engine.fit`` / ``Engine.test``), with three choices made explicit:

* backbone ``wide_resnet50_2``, layers ``layer2`` + ``layer3``, ``coreset_sampling_ratio``
  ``--coreset-ratio`` (0.1), ``num_neighbors`` 9 (anomalib's default Eq.-7 reweighting; its
  patch search is 1-NN), pre-processing ``Resize((256, 256)) -> CenterCrop(224)`` (anomalib's
  paper setting, ``Patchcore.configure_pre_processor(image_size=(256, 256),
  center_crop_size=(224, 224))``, i.e. the same 28x28 = 784 patches per image as jad);
* ``pre_trained=False`` (no download) and then the torchvision-layout ``--weights`` file is
  loaded into the timm feature extractor with ``load_state_dict(strict=True)``. timm's
  ``features_only`` model stops after ``layer3``, so exactly the ``layer4.*`` and ``fc.*`` keys
  are dropped first (asserted); the load is then checked a second way by running torchvision's
  full ``wide_resnet50_2`` with the whole file (also ``strict=True``) and comparing layer2 /
  layer3 outputs on a random input (max abs difference written to the JSON);
* CPU, ``torch.set_num_threads(--threads)``, no visualizer (images are not written unless
  ``--visualizer``), no logger.

Timings per category (seconds, ``time.perf_counter``), taken by wrapping bound methods of the
model instance from outside:

* ``features_s``: time inside ``PatchcoreModel.forward`` while training (backbone + pooling +
  embedding, the feature-extraction part of the fit);
* ``features_wall_s``: from ``Engine.fit`` start until the coreset starts (adds Lightning setup
  and reading/decoding/resizing the images; comparable to jad's ``features_s``, whose loop also
  loads the images);
* ``coreset_s``: time inside ``PatchcoreModel.subsample_embedding`` (``vstack`` of the
  embeddings + ``KCenterGreedy``: sparse random projection and the greedy loop);
* ``fit_s``: from ``Engine.fit`` start until the memory bank is ready (end of the coreset);
  includes Lightning setup and image loading;
* ``fit_wall_s``: the whole ``Engine.fit`` call (adds anomalib's validation pass over the test
  set, ``val_split_mode=same_as_test``, and the checkpoint write);
* ``test_s`` / ``test_images_per_s``: the whole ``Engine.test`` call (loading, pre-processing,
  model, post-processing, metrics) / test images per second of it;
* ``test_model_s`` / ``test_model_images_per_s``: only the time inside ``PatchcoreModel.forward``
  during ``Engine.test`` (backbone + kNN + Eq. 7 + anomaly map).

Usage (see README.md)::

    /tmp/anomalib-venv/bin/python experiments/anomalib/run_anomalib_patchcore.py \
        --data /tmp/jad_cmp/data --categories all --weights /tmp/jad_cmp/wrn50_seed0.pth \
        --coreset-ratio 0.1 --out /tmp/jad_cmp/anomalib.json
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

IMAGE_SIZE = (256, 256)
CROP_SIZE = (224, 224)
LAYERS = ("layer2", "layer3")
BACKBONE = "wide_resnet50_2"


class UsageError(ValueError):
    """A user-fixable problem with the arguments or the data folder."""


# ---------------------------------------------------------------------------------------------
# Arguments and data layout
# ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, type=Path, help="MVTec-layout root")
    p.add_argument("--categories", default="all", help="comma list, or 'all' (every sub-folder)")
    p.add_argument("--weights", required=True, type=Path, help="torchvision-layout WRN50-2 .pth")
    p.add_argument("--coreset-ratio", type=float, default=0.1)
    p.add_argument("--out", required=True, type=Path, help="results JSON")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--train-batch-size", type=int, default=32, help="anomalib default 32")
    p.add_argument("--eval-batch-size", type=int, default=32, help="anomalib default 32")
    p.add_argument("--num-neighbors", type=int, default=9, help="Eq. 7 support size (default 9)")
    p.add_argument("--no-crop", action="store_true", help="anomalib's plain 256x256 default")
    p.add_argument("--visualizer", action="store_true", help="also write anomalib's images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=None, help="Engine root (default: a temp dir)")
    args = p.parse_args(argv)
    if not 0.0 < args.coreset_ratio <= 1.0:
        raise UsageError(f"--coreset-ratio {args.coreset_ratio} must be in (0, 1], e.g. 0.1.")
    if args.threads < 1:
        raise UsageError(f"--threads {args.threads} must be >= 1.")
    return args


def resolve_categories(root: Path, spec: str) -> list[str]:
    """'all' -> sorted sub-folders of ``root`` that have ``train/good``; else the comma list."""
    if not root.is_dir():
        raise UsageError(f"--data {root} is not a directory; pass the MVTec-layout root folder.")
    if spec.strip() in ("", "all"):
        cats = sorted(d.name for d in root.iterdir() if (d / "train" / "good").is_dir())
        if not cats:
            raise UsageError(f"--data {root} has no <category>/train/good folder; check the path.")
        return cats
    cats = [c.strip() for c in spec.split(",") if c.strip()]
    for c in cats:
        if not (root / c / "train" / "good").is_dir():
            raise UsageError(
                f"category '{c}' has no {root / c / 'train' / 'good'}; fix --categories or --data."
            )
        if not (root / c / "test").is_dir():
            raise UsageError(f"category '{c}' has no {root / c / 'test'} folder; fix --data.")
    return cats


# ---------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------
def load_backbone_weights(model: Any, weights: Path) -> dict[str, Any]:
    """Load a torchvision WRN50-2 state dict into anomalib's timm feature extractor.

    Returns a small report (key counts, dropped prefixes, parity with torchvision) for the JSON.
    """
    import torch
    import torchvision

    if not weights.is_file():
        raise UsageError(f"--weights {weights} does not exist; run make_weights.py first.")
    try:
        sd = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise UsageError(f"--weights {weights} is not a torch.save state dict ({e}).") from e
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UsageError(f"--weights {weights} must hold a dict of tensors (a state_dict).")

    extractor = model.model.feature_extractor.feature_extractor  # timm FeatureListNet
    wanted = set(extractor.state_dict().keys())
    dropped = sorted(k for k in sd if k not in wanted)
    bad = [k for k in dropped if not k.startswith(("layer4.", "fc."))]
    if bad:
        raise UsageError(f"--weights has keys the WRN50-2 extractor does not know, e.g. {bad[:3]}.")
    subset = {k: v for k, v in sd.items() if k in wanted}
    # strict=True: raises on any missing key, unexpected key or shape mismatch.
    extractor.load_state_dict(subset, strict=True)

    # Second check: torchvision's own model with the full file must give the same layer2/layer3.
    tv = torchvision.models.wide_resnet50_2(weights=None)
    tv.load_state_dict(sd, strict=True)
    tv.eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        h = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        l2 = tv.layer2(tv.layer1(h))
        l3 = tv.layer3(l2)
        feats = model.model.feature_extractor(x)
    diff = max(
        float((feats["layer2"] - l2).abs().max()),
        float((feats["layer3"] - l3).abs().max()),
    )
    if diff > 1e-4:
        raise RuntimeError(f"timm extractor differs from torchvision by {diff} after loading")
    return {
        "file_keys": len(sd),
        "loaded_keys": len(subset),
        "extractor_keys": len(wanted),
        "dropped_keys": len(dropped),
        "dropped_prefixes": sorted({k.split(".")[0] for k in dropped}),
        "strict": True,
        "max_abs_diff_vs_torchvision_layer2_layer3": diff,
    }


# ---------------------------------------------------------------------------------------------
# Timing wrappers (bound methods replaced on the instance; anomalib's files are untouched)
# ---------------------------------------------------------------------------------------------
class Timers:
    """Accumulates wall time of the wrapped model calls, split by phase."""

    def __init__(self) -> None:
        self.forward_train_s = 0.0
        self.forward_eval_s = 0.0
        self.forward_eval_images = 0
        self.coreset_s = 0.0
        self.coreset_start: float | None = None
        self.coreset_end: float | None = None
        self.bank_candidates = 0

    def wrap(self, torch_model: Any) -> None:
        orig_forward = torch_model.forward
        orig_subsample = torch_model.subsample_embedding

        @functools.wraps(orig_forward)
        def forward(x, *a, **k):
            t0 = time.perf_counter()
            out = orig_forward(x, *a, **k)
            dt = time.perf_counter() - t0
            if torch_model.training:
                self.forward_train_s += dt
            else:
                self.forward_eval_s += dt
                self.forward_eval_images += int(x.shape[0])
            return out

        @functools.wraps(orig_subsample)
        def subsample_embedding(*a, **k):
            self.bank_candidates = sum(int(e.shape[0]) for e in torch_model.embedding_store)
            self.coreset_start = time.perf_counter()
            out = orig_subsample(*a, **k)
            self.coreset_end = time.perf_counter()
            self.coreset_s += self.coreset_end - self.coreset_start
            return out

        torch_model.forward = forward
        torch_model.subsample_embedding = subsample_embedding


def _scalar(v: Any) -> float:
    return float(v.item()) if hasattr(v, "item") else float(v)


# ---------------------------------------------------------------------------------------------
# One category
# ---------------------------------------------------------------------------------------------
def run_category(args: argparse.Namespace, category: str, workdir: Path) -> dict[str, Any]:
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine
    from anomalib.models import Patchcore
    from lightning.pytorch import seed_everything

    seed_everything(args.seed, workers=True, verbose=False)
    crop = None if args.no_crop else CROP_SIZE
    pre = Patchcore.configure_pre_processor(image_size=IMAGE_SIZE, center_crop_size=crop)
    model = Patchcore(
        backbone=BACKBONE,
        layers=LAYERS,
        pre_trained=False,
        coreset_sampling_ratio=args.coreset_ratio,
        num_neighbors=args.num_neighbors,
        pre_processor=pre,
        visualizer=args.visualizer,
    )
    weights_report = load_backbone_weights(model, args.weights)
    timers = Timers()
    timers.wrap(model.model)

    datamodule = MVTecAD(
        root=args.data,
        category=category,
        train_batch_size=args.train_batch_size,
        eval_batch_size=args.eval_batch_size,
        num_workers=args.num_workers,
        seed=args.seed,
    )
    engine = Engine(
        default_root_dir=workdir / category,
        logger=False,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
    )

    t0 = time.perf_counter()
    engine.fit(model=model, datamodule=datamodule)
    t1 = time.perf_counter()
    assert timers.coreset_end is not None, "anomalib never called subsample_embedding"
    n_train = len(datamodule.train_data)
    bank = tuple(model.model.memory_bank.shape)

    timers.forward_eval_s = 0.0  # drop the validation pass that Engine.fit runs
    timers.forward_eval_images = 0
    t2 = time.perf_counter()
    results = engine.test(model=model, datamodule=datamodule, verbose=False)
    t3 = time.perf_counter()
    n_test = len(datamodule.test_data)
    metrics = {k: _scalar(v) for k, v in (results[0] if results else {}).items()}

    test_s = t3 - t2
    return {
        "loadavg_after": list(os.getloadavg()),
        "n_train": n_train,
        "n_test": n_test,
        "bank_candidates": timers.bank_candidates,
        "memory_bank_shape": list(bank),
        "weights": weights_report,
        "metrics": metrics,
        "timings": {
            "features_s": timers.forward_train_s,
            "features_wall_s": timers.coreset_start - t0,
            "coreset_s": timers.coreset_s,
            "fit_s": timers.coreset_end - t0,
            "fit_wall_s": t1 - t0,
            "test_s": test_s,
            "test_images_per_s": n_test / test_s,
            "test_model_s": timers.forward_eval_s,
            "test_model_images_per_s": (
                timers.forward_eval_images / timers.forward_eval_s
                if timers.forward_eval_s
                else None
            ),
        },
    }


def versions() -> dict[str, str]:
    import anomalib
    import lightning
    import numpy
    import timm
    import torch
    import torchvision

    return {
        "python": platform.python_version(),
        "anomalib": anomalib.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "lightning": lightning.__version__,
        "numpy": numpy.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        categories = resolve_categories(args.data, args.categories)
        if not args.weights.is_file():
            raise UsageError(f"--weights {args.weights} does not exist; run make_weights.py first.")
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    os.environ.setdefault("TQDM_DISABLE", "1")
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("anomalib").setLevel(logging.WARNING)
    import torch

    torch.set_num_threads(args.threads)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="anomalib_patchcore_"))

    out: dict[str, Any] = {
        "tool": "anomalib",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "loadavg_start": list(os.getloadavg()),
        },
        "versions": versions(),
        "config": {
            "backbone": BACKBONE,
            "layers": list(LAYERS),
            "image_size": list(IMAGE_SIZE),
            "center_crop": None if args.no_crop else list(CROP_SIZE),
            "coreset_ratio": args.coreset_ratio,
            "num_neighbors": args.num_neighbors,
            "train_batch_size": args.train_batch_size,
            "eval_batch_size": args.eval_batch_size,
            "num_workers": args.num_workers,
            "visualizer": args.visualizer,
            "seed": args.seed,
            "weights": str(args.weights),
            "data": str(args.data),
        },
        "categories": {},
    }
    try:
        for cat in categories:
            print(f"[anomalib] {cat}: fit + test ...", flush=True)
            res = run_category(args, cat, workdir)
            out["categories"][cat] = res
            t = res["timings"]
            print(
                f"[anomalib] {cat}: N={res['bank_candidates']} bank={res['memory_bank_shape']} "
                f"features {t['features_s']:.1f}s coreset {t['coreset_s']:.1f}s "
                f"fit {t['fit_s']:.1f}s test {t['test_images_per_s']:.2f} img/s",
                flush=True,
            )
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(out, indent=2))  # partial results survive a crash
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"[anomalib] wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
