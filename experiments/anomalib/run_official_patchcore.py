"""Time the official PyTorch PatchCore (amazon-science/patchcore-inspection @ fcaa92f) on CPU.

Measurement only, runs INSIDE /tmp/anomalib-venv (needs torchvision + faiss-cpu there). The
official code is NOT part of jad: fetch it outside the repo (e.g. /tmp/patchcore-inspection)
and pass ``--src``; this script imports its classes from there and never copies or edits them.

Setup = the README baseline (IM224_WR50_L2-3_P01_D1024-1024_PS-3_AN-1): WRN50-2 layers
layer2 + layer3, Resize(256) -> CenterCrop(224), pretrain/target embed dim 1024, patch size 3,
``ApproximateGreedyCoresetSampler(--coreset-ratio)``, ``FaissNN(on_gpu=False)``, 1-NN,
``batch_size 2`` loaders. The backbone is torchvision's ``wide_resnet50_2(weights=None)`` with
``--weights`` loaded ``strict=True`` (the official ``backbones.load`` would download ImageNet
weights). Threads: ``torch.set_num_threads(--threads)`` and faiss uses ``--threads`` OpenMP threads.

Timings per category (``time.perf_counter``, wrappers on the instance, official files untouched):
``features_s`` (time in ``PatchCore._embed`` during ``fit``), ``coreset_s`` (the sampler's
``run``), ``fit_s`` (the whole ``PatchCore.fit(train_loader)``, image loading included),
``test_s`` / ``test_images_per_s`` (the whole ``PatchCore.predict(test_loader)``: loading,
embedding, faiss search, upsampling + Gaussian blur) and ``test_model_s`` (time in ``_predict``).

Usage::

    /tmp/anomalib-venv/bin/python experiments/anomalib/run_official_patchcore.py \
        --src /tmp/patchcore-inspection --data /tmp/jad_cmp/data_small --categories all \
        --weights /tmp/jad_cmp/wrn50_seed0.pth --out /tmp/jad_cmp/official_small.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from run_anomalib_patchcore import UsageError, resolve_categories


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", required=True, type=Path, help="patchcore-inspection checkout")
    p.add_argument("--data", required=True, type=Path, help="MVTec-layout root")
    p.add_argument("--categories", default="all")
    p.add_argument("--weights", required=True, type=Path, help="torchvision-layout WRN50-2 .pth")
    p.add_argument("--coreset-ratio", type=float, default=0.1)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=2, help="official default 2")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not 0.0 < args.coreset_ratio < 1.0:
        raise UsageError(f"--coreset-ratio {args.coreset_ratio} must be in (0, 1) for the sampler.")
    src = args.src / "src" if (args.src / "src" / "patchcore").is_dir() else args.src
    if not (src / "patchcore" / "patchcore.py").is_file():
        raise UsageError(
            f"--src {args.src} has no src/patchcore/patchcore.py; fetch the repo there."
        )
    args.src = src
    return args


def run_category(args: argparse.Namespace, category: str) -> dict[str, Any]:
    import numpy as np
    import patchcore.common
    import patchcore.datasets.mvtec as mvtec
    import patchcore.patchcore
    import patchcore.sampler
    import torch
    import torchvision
    from sklearn.metrics import roc_auc_score

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    device = torch.device("cpu")

    backbone = torchvision.models.wide_resnet50_2(weights=None)
    sd = torch.load(args.weights, map_location="cpu", weights_only=True)
    backbone.load_state_dict(sd, strict=True)  # all 320 keys, shapes checked
    backbone.name, backbone.seed = "wideresnet50", None

    sampler = patchcore.sampler.ApproximateGreedyCoresetSampler(args.coreset_ratio, device)
    model = patchcore.patchcore.PatchCore(device)
    model.load(
        backbone=backbone,
        layers_to_extract_from=["layer2", "layer3"],
        device=device,
        input_shape=(3, 224, 224),
        pretrain_embed_dimension=1024,
        target_embed_dimension=1024,
        patchsize=3,
        featuresampler=sampler,
        anomaly_score_num_nn=1,
        nn_method=patchcore.common.FaissNN(False, args.threads),
    )

    def loader(split):
        ds = mvtec.MVTecDataset(
            str(args.data), classname=category, resize=256, imagesize=224, split=split
        )
        return torch.utils.data.DataLoader(
            ds, batch_size=args.batch_size, shuffle=False, num_workers=args.num_workers
        )

    train, test = loader(mvtec.DatasetSplit.TRAIN), loader(mvtec.DatasetSplit.TEST)

    acc = {"embed_fit": 0.0, "coreset": 0.0, "predict": 0.0, "n": 0, "fitting": False}
    orig_embed, orig_run, orig_predict = model._embed, sampler.run, model._predict

    def embed(*a, **k):
        t0 = time.perf_counter()
        out = orig_embed(*a, **k)
        if acc["fitting"]:
            acc["embed_fit"] += time.perf_counter() - t0
        return out

    def run(features):
        acc["n"] = int(len(features))
        t0 = time.perf_counter()
        out = orig_run(features)
        acc["coreset"] += time.perf_counter() - t0
        return out

    def predict(images):
        t0 = time.perf_counter()
        out = orig_predict(images)
        acc["predict"] += time.perf_counter() - t0
        return out

    model._embed, sampler.run, model._predict = embed, run, predict

    acc["fitting"] = True
    t0 = time.perf_counter()
    model.fit(train)
    fit_s = time.perf_counter() - t0
    acc["fitting"] = False
    bank = model.anomaly_scorer.detection_features

    t1 = time.perf_counter()
    scores, _segs, labels, _masks = model.predict(test)
    test_s = time.perf_counter() - t1
    n_test = len(test.dataset)
    labels = np.asarray(labels)
    auroc = float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else None
    return {
        "n_train": len(train.dataset),
        "n_test": n_test,
        "bank_candidates": acc["n"],
        "memory_bank_shape": list(np.asarray(bank).shape),
        "weights": {"file_keys": len(sd), "loaded_keys": len(sd), "strict": True},
        "metrics": {"image_AUROC": auroc},
        "timings": {
            "features_s": acc["embed_fit"],
            "features_wall_s": fit_s - acc["coreset"],
            "coreset_s": acc["coreset"],
            "fit_s": fit_s,
            "test_s": test_s,
            "test_images_per_s": n_test / test_s,
            "test_model_s": acc["predict"],
            "test_model_images_per_s": n_test / acc["predict"] if acc["predict"] else None,
        },
        "loadavg_after": list(os.getloadavg()),
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
    sys.path.insert(0, str(args.src))
    import faiss
    import torch
    import torchvision

    torch.set_num_threads(args.threads)
    commit = "fcaa92f (expected)"
    out: dict[str, Any] = {
        "tool": "official patchcore-inspection",
        "source": str(args.src),
        "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "loadavg_start": list(os.getloadavg()),
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "faiss": faiss.__version__,
        },
        "config": {
            "coreset_ratio": args.coreset_ratio,
            "batch_size": args.batch_size,
            "num_workers": args.num_workers,
            "threads": args.threads,
        },
        "categories": {},
    }
    for cat in categories:
        print(f"[official] {cat}: fit + test ...", flush=True)
        res = run_category(args, cat)
        out["categories"][cat] = res
        t = res["timings"]
        print(
            f"[official] {cat}: N={res['bank_candidates']} bank={res['memory_bank_shape']} "
            f"features {t['features_s']:.1f}s coreset {t['coreset_s']:.1f}s fit {t['fit_s']:.1f}s "
            f"test {t['test_images_per_s']:.2f} img/s",
            flush=True,
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2))
    print(f"[official] wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
