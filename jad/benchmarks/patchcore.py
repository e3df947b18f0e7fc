"""PatchCore per stage: jad's real stages vs peers, same process, same weights, same arrays.

    python -m jad.benchmark patchcore [--train-images 32] [--test-images 16] [--image-size 224]
                                      [--batch 8] [--repeats 3] [--peer-steps 500]

Random ImageNet-normalised-like images (N(0, 1), NHWC float32) and a random WRN50-2 (torch's
init, converted for jad by ``torch_to_flax``, as ``python -m jad.benchmark backbone``); jad runs
the functions ``jad.methods.patchcore.PatchCore`` runs. Stages and their peers:

- backbone to layer2 + layer3, one batch: the torch WRN50-2 of ``third_party/torch_wrn50.py``, NCHW;
- patch aggregation of one batch (unfold 3x3, layer3 resized to layer2's grid, adaptive pooling to
  1024 per layer, then to 1024): the torch transcription ``jad.benchmarks.torch_pbas._patch_features``
  on the torch backbone's outputs;
- fit, features of every training image (``PatchCore.features``: backbone + aggregation fused by
  XLA): torch backbone + the transcription, batch by batch;
- fit, coreset 10 % (``select_coreset``, same projection and start points): the torch and numpy
  samplers of ``jad.benchmarks.kernels`` (run ``--peer-steps`` picks, extrapolated linearly);
- score, kNN k=1 of every test patch against the bank (``nearest_bank_distances``): faiss-cpu
  ``IndexFlatL2`` and the blocked numpy brute force of ``jad.benchmarks.kernels``;
- score, anomaly maps (``anomaly_maps``: bilinear upsample + Gaussian blur sigma 4): torch
  ``F.interpolate`` + ``scipy.ndimage.gaussian_filter`` per map (the official RescaleSegmentor);
- score, end to end (``PatchCore.predict`` on the test images): the official-style pipeline
  assembled from the peers above (torch features, faiss or numpy kNN, torch + scipy maps).

Each jad function is compiled and run once before timing; jad and its peers then run in
alternating rounds (``--repeats``), and the minimum per side is reported as peer / jad (> 1: jad
faster). A missing torch or faiss-cpu leaves its rows without a peer. Nothing asserts a time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jad.benchmarks import report
from jad.benchmarks.kernels import _same_prefix, numpy_coreset, numpy_knn1, torch_coreset

BENCH = "patchcore"


def _have(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _rounds(
    fns: dict[str, Callable[[], object]], repeats: int, warm: bool = True
) -> tuple[dict[str, float], dict[str, object]]:
    """A warm-up call of each (unless ``warm`` is False), then ``repeats`` round-robin rounds.

    Returns (min seconds per name, last output per name)."""
    if warm:
        for f in fns.values():
            jax.block_until_ready(f())
    best = dict.fromkeys(fns, float("inf"))
    outs: dict[str, object] = {}
    for _ in range(max(1, repeats)):
        for name, f in fns.items():
            t = time.perf_counter()
            outs[name] = jax.block_until_ready(f())
            best[name] = min(best[name], time.perf_counter() - t)
    return best, outs


def _emit(case: str, times: dict[str, float], missing: tuple[str, ...] = (), notes: str = ""):
    """Prints one stage and records a report row per peer (``times["jad"]`` is jad's)."""
    t_jad = times["jad"]
    parts = [f"{case:<58s} jad {report.fmt_seconds(t_jad):>9s}"]
    peers = {k: v for k, v in times.items() if k != "jad"}
    for name, t in peers.items():
        parts.append(f"{name} {report.fmt_seconds(t):>9s} (x{t / t_jad:5.2f})")
    parts += [f"{p} not installed" for p in missing]
    print(" | ".join(parts) + (f" | {notes}" if notes else ""), flush=True)
    for name, t in peers.items():
        report.record(BENCH, case, t_jad, name, t, notes=notes)
    for p in missing:
        report.record_missing(BENCH, case, t_jad, p, notes=notes)
    if not peers and not missing:
        report.record(BENCH, case, t_jad, notes=notes)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def torch_maps(scores: np.ndarray, grid: tuple[int, int], out_hw: tuple[int, int], sigma: float):
    """Official RescaleSegmentor: [B, h*w] -> torch bilinear (align_corners=False) to ``out_hw``,
    then ``scipy.ndimage.gaussian_filter`` per map; [B, H, W] float32."""
    import scipy.ndimage
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        s = torch.from_numpy(np.array(scores, np.float32).reshape(-1, 1, *grid))
        up = F.interpolate(s, size=out_hw, mode="bilinear", align_corners=False)[:, 0].numpy()
    return np.stack([scipy.ndimage.gaussian_filter(m, sigma=sigma) for m in up])


def _backbone(torch_ok: bool):
    """(jad module, jad variables, torch net or None): shared random weights when torch is here."""
    from jad.models.wide_resnet import wide_resnet50_2

    if not torch_ok:
        from jad.models.pretrained import load_backbone

        module, variables = load_backbone("random", seed=0)
        return module, variables, None
    import torch

    from jad.benchmarks.backbone import _torch_reference
    from jad.models.convert import torch_to_flax

    torch.manual_seed(0)
    net = _torch_reference().wide_resnet50_2().eval()
    variables, _ = torch_to_flax(
        {k: v.numpy() for k, v in net.state_dict().items()}, "wide_resnet50_2"
    )
    return wide_resnet50_2(), jax.device_put(variables), net


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m jad.benchmark patchcore", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--train-images", type=int, default=32)
    p.add_argument("--test-images", type=int, default=16)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--peer-steps", type=int, default=500, help="coreset picks the peers run")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.image_size % 32 or min(args.train_images, args.test_images, args.batch) < 1:
        p.error("--image-size must be a multiple of 32 and image counts / batch positive")

    from jad.config_base import patchcore as patchcore_config
    from jad.methods import patchcore as pcm
    from jad.models.features import aggregate_patch_features, make_feature_fn

    torch_ok, faiss_ok = _have("torch"), _have("faiss")
    threads = os.cpu_count() or 1
    if torch_ok:
        import torch

        from jad.benchmarks.torch_pbas import _patch_features

        torch.set_num_threads(threads)
    s, bsz = args.image_size, args.batch
    config = patchcore_config("synthetic")
    config.data.resize = config.data.crop = s
    config.data.batch_size = bsz
    layers = tuple(config.backbone.layers)
    dim = int(config.patchcore.target_embed_dim)
    assert int(config.patchcore.pretrain_embed_dim) == dim, "the torch peer pools both to `dim`"
    ratio, sigma = float(config.patchcore.coreset_ratio), float(config.patchcore.sigma)

    module, variables, net = _backbone(torch_ok)
    pc = pcm.PatchCore(config, backbone=(module, variables), mesh=False)
    rng = np.random.default_rng(args.seed)
    train_x = rng.standard_normal((args.train_images, s, s, 3), dtype=np.float32)
    test_x = rng.standard_normal((args.test_images, s, s, 3), dtype=np.float32)
    print(
        f"PatchCore stages: WRN50-2 {'+'.join(layers)} -> {dim}, {args.train_images} train / "
        f"{args.test_images} test images of {s}x{s}, batch {bsz}, grid {pc.grid}; jax "
        f"{jax.__version__} ({jax.default_backend()}), "
        + (f"torch {torch.__version__} ({threads} threads)" if torch_ok else "no torch")
        + f"; {args.repeats} rounds, min; ratios peer/jad (> 1: jad faster)",
        flush=True,
    )

    def to_t(x):
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    def torch_features(x_t):
        with torch.inference_mode():
            out = net.forward_stages(x_t, layers)
            return _patch_features(out[layers[0]], out[layers[1]], dim)

    # 1. backbone, one batch ----------------------------------------------------------------------
    xb = jax.device_put(train_x[:bsz])
    stages = make_feature_fn(module, "stages", stages=layers)
    fns: dict[str, Callable[[], object]] = {"jad": lambda: stages(variables, xb)}
    missing = () if torch_ok else ("torch",)
    if torch_ok:
        xb_t = to_t(train_x[:bsz])

        def torch_stages():
            with torch.inference_mode():
                return net.forward_stages(xb_t, layers)

        fns["torch NCHW"] = torch_stages
    n_b = len(train_x[:bsz])
    _emit(
        f"backbone to {'+'.join(layers)}, batch {n_b} x {s}²",
        _rounds(fns, args.repeats)[0],
        missing,
    )

    # 2. aggregation, one batch -----------------------------------------------------------------------
    maps_j = stages(variables, xb)
    l2_j, l3_j = maps_j[layers[0]], maps_j[layers[1]]
    agg = jax.jit(lambda a, b: aggregate_patch_features([a, b], dim, dim))
    fns = {"jad": lambda: agg(l2_j, l3_j)}
    notes = ""
    if torch_ok:
        out_t = torch_stages()
        l2_t, l3_t = out_t[layers[0]], out_t[layers[1]]
        fns["torch transcription"] = lambda: _patch_features(l2_t, l3_t, dim)
        with torch.inference_mode():
            ref = _patch_features(l2_t, l3_t, dim).numpy()
        notes = f"max rel diff to torch {_rel(agg(l2_j, l3_j), ref):.0e}"
    _emit(
        f"patch aggregation, batch {n_b} -> {pc.grid[0] * pc.grid[1]} x {dim}",
        _rounds(fns, args.repeats)[0],
        missing,
        notes,
    )

    # 3. fit: features of every training image (batch by batch, as PatchCore.fit) ----------------
    def batches(images):
        return [images[i : i + bsz] for i in range(0, len(images), bsz)]

    def jad_features(images):
        return np.concatenate([np.asarray(pc.features(b)) for b in batches(images)])

    jax.block_until_ready(pc.features(train_x[:bsz]))  # compile (every batch has this shape)
    fns = {"jad": lambda: jad_features(train_x)}
    if torch_ok:
        fns["torch backbone + transcription"] = lambda: np.concatenate(
            [torch_features(to_t(b)).numpy() for b in batches(train_x)]
        )
    times, outs = _rounds(fns, max(1, args.repeats - 1), warm=False)
    _emit(f"fit: features of {len(train_x)} images (PatchCore.features)", times, missing)
    x = np.asarray(outs["jad"]).reshape(-1, dim)

    # 4. fit: coreset ------------------------------------------------------------------------------------
    n = len(x)
    m = int(n * ratio)
    w = rng.uniform(-1 / np.sqrt(dim), 1 / np.sqrt(dim), (128, dim)).astype(np.float32)
    starts = rng.choice(n, 10, replace=False)
    jx, jw = jnp.asarray(x), jnp.asarray(w)
    key = jax.random.key(args.seed)

    def jad_coreset():
        return pcm.select_coreset(jx, ratio=ratio, key=key, projection=jw, start_indices=starts)

    idx = jad_coreset()  # compile
    times, _ = _rounds({"jad": jad_coreset}, args.repeats, warm=False)
    ps = min(m, args.peer_steps)
    peers: list[tuple[str, Callable]] = [("numpy", lambda: numpy_coreset(x, ps, w, starts))]
    if torch_ok:
        peers += [
            ("torch[N,P]", lambda: torch_coreset(x, ps, w, starts, False)),
            ("torch[P,N]", lambda: torch_coreset(x, ps, w, starts, True)),
        ]
    agree = []
    for name, fn in peers:
        pidx, t_setup, t_steps = fn()
        times[name] = t_setup + t_steps * m / ps
        agree.append(f"{name} {_same_prefix(idx, pidx)}/{ps}")
    notes = "same picks: " + ", ".join(agree)
    if ps < m:
        notes += f"; peer times extrapolated from {ps} picks"
    _emit(f"fit: coreset {ratio:.0%} of {n}x{dim} ({m} picks)", times, missing, notes)

    # 5. score: kNN -------------------------------------------------------------------------------------
    bank = x[idx]
    jbank = jnp.asarray(bank)
    test_feats = jnp.asarray(jad_features(test_x))
    q = np.asarray(test_feats).reshape(-1, dim)
    fns = {"jad": lambda: pcm.nearest_bank_distances(test_feats, jbank, k=1)}
    fns["numpy"] = lambda: numpy_knn1(q, bank)
    if faiss_ok:
        import faiss

        index = faiss.IndexFlatL2(dim)
        index.add(bank)
        fns["faiss-cpu"] = lambda: index.search(q, 1)
    sq, nn_idx = pcm.nearest_bank_distances(test_feats, jbank, k=1)
    _, ni = numpy_knn1(q, bank)
    knn_times, _ = _rounds(fns, args.repeats)
    _emit(
        f"score: kNN k=1 of {len(q)} patches vs bank {m}x{dim}",
        knn_times,
        () if faiss_ok else ("faiss-cpu",),
        f"idx==numpy {np.mean(np.asarray(nn_idx).reshape(-1) == ni):.4f}",
    )

    # 6. score: maps ------------------------------------------------------------------------------------
    scores = pcm.patch_scores_from_distances(sq)
    scores_np = np.asarray(scores)
    fns = {"jad": lambda: pcm.anomaly_maps(scores, grid=pc.grid, out_hw=pc.image_hw, sigma=sigma)}
    notes = ""
    if torch_ok:
        fns["torch + scipy"] = lambda: torch_maps(scores_np, pc.grid, pc.image_hw, sigma)
        got = pcm.anomaly_maps(scores, grid=pc.grid, out_hw=pc.image_hw, sigma=sigma)
        notes = f"max rel diff {_rel(got, torch_maps(scores_np, pc.grid, pc.image_hw, sigma)):.0e}"
    _emit(
        f"score: maps {len(test_x)} x {pc.grid[0]}x{pc.grid[1]} -> {s}² (bilinear + blur)",
        _rounds(fns, args.repeats)[0],
        missing,
        notes,
    )

    # 7. score: end to end ---------------------------------------------------------------------------
    state = {"bank": bank, "coreset_indices": np.asarray(idx, np.int32)}
    pc.predict(state, test_x[:bsz])  # compile (every batch has this shape)
    fns = {"jad": lambda: [pc.predict(state, b).anomaly_maps for b in batches(test_x)]}
    if torch_ok:
        if faiss_ok:
            knn_peer = lambda qq: index.search(qq, 1)[0]
        else:
            knn_peer = lambda qq: numpy_knn1(qq, bank)[0]

        def official():
            out_maps, out_scores = [], []
            for b in batches(test_x):
                f = torch_features(to_t(b)).numpy()
                d = knn_peer(f.reshape(-1, dim)).reshape(len(f), -1)
                out_scores.append(d.max(1))
                out_maps.append(torch_maps(d, pc.grid, pc.image_hw, sigma))
            return np.concatenate(out_scores), np.concatenate(out_maps)

        fns["torch + " + ("faiss-cpu" if faiss_ok else "numpy") + " + scipy"] = official
    times, _ = _rounds(fns, max(1, args.repeats - 1), warm=False)
    _emit(
        f"score: PatchCore.predict, {len(test_x)} images in batches of {bsz}",
        times,
        missing,
        notes=f"{len(test_x) / times['jad']:.1f} images/s",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
