"""ProxyCore benchmark: ``python -m jad.benchmark proxycore [--k K] [--steps N] [--hidden H] [--compare]``.

Measures, in one process on the same CPU and the same features:

1. **Train step** (batch 512 patches, 1024 -> 4096 -> 1024 MLPs x 2, K proxies; default K = 16,385,
   MVTec bottle at a 10 % pseudo-label ratio): jad's compiled step (``ProxyCore.train_step`` through
   ``jad.train_lib.parallel.DataParallel``, AdamP from ``jad.optim``) vs a PyTorch transcription of
   the official step written here from the spec (``shared/specs/proxycore.md`` §5-§6: two MLPs,
   normalised-softmax logits ``z @ normalize(W).T / T``, per-sample focal loss, feature noise,
   ``adamp.AdamP`` from the package). Prints seconds per step and the ratio torch / jad (> 1: jad
   faster). A small parity check first runs one noise-free step of both from the same weights.
2. **Host memory** of the data-dependent parts on memory-sized random features (``--memory-rows``
   patches): examples -> pseudo-labels (coreset + blocked labels) -> finalize (embedding + bank),
   peak RSS above the RSS with the features allocated, as a multiple of the features' size.
3. **Synthetic config** (``configs/proxycore_synthetic.py``, one category, in a child process):
   epoch time, step time and the child's peak RSS (its ``VmHWM``), next to the peak RSS
   of PatchCore on the same data in another child (same backbone and runtime).
4. ``--compare``: ``faithful`` vs ``fixed`` vs plain PatchCore on the synthetic set, same random
   backbone, same preprocessing and masks, same test set (``jad.train_lib.runner``); the seven
   metrics (category means).

Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jad.benchmarks import child_env, report
from jad.benchmarks.kernels import PeakRSS, _rss_bytes

BOTTLE_K = int(163_856 * 0.1)  # 209 images x 784 patches, 10 % coreset


# ---------------------------------------------------------------------------------------------
# The official step in PyTorch (transcribed from the spec)
# ---------------------------------------------------------------------------------------------


def torch_model(dim: int, hidden: int, out: int, k: int):
    """The official ``CoreInit`` networks: ``embedding_layer`` and ``projection_layer`` =
    Linear -> BatchNorm1d -> ReLU -> Linear (torch defaults), and the proxy matrix [K, out]
    (U(-1/sqrt(out), 1/sqrt(out)), the official overwrite)."""
    import torch
    from torch import nn

    def mlp(i):
        return nn.Sequential(
            nn.Linear(i, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out)
        )

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding_layer = mlp(dim)
            self.projection_layer = mlp(out)
            bound = 1.0 / out**0.5
            self.proxies = nn.Parameter(torch.empty(k, out).uniform_(-bound, bound))

        def forward(self, f):
            return self.projection_layer(self.embedding_layer(f))

    return Net()


def torch_load_from_jad(net, params: dict, batch_stats: dict) -> None:
    """Copies jad's parameters (Flax kernels [in, out] -> torch weights [out, in])."""
    import torch

    def t(x):
        return torch.from_numpy(np.array(x, np.float32))

    with torch.no_grad():
        for name, seq in (("embedding", net.embedding_layer), ("projection", net.projection_layer)):
            p, s = params[name], batch_stats[name]
            seq[0].weight.copy_(t(p["fc1"]["dense"]["kernel"]).T)
            seq[0].bias.copy_(t(p["fc1"]["dense"]["bias"]))
            seq[1].weight.copy_(t(p["bn"]["scale"]))
            seq[1].bias.copy_(t(p["bn"]["bias"]))
            seq[1].running_mean.copy_(t(s["bn"]["mean"]))
            seq[1].running_var.copy_(t(s["bn"]["var"]))
            seq[3].weight.copy_(t(p["fc2"]["dense"]["kernel"]).T)
            seq[3].bias.copy_(t(p["fc2"]["dense"]["bias"]))
        net.proxies.copy_(t(params["proxies"]))


def torch_step(net, opt, f, y, *, temperature=0.05, gamma=2.0, noise_std=1.0, batch_mean=False):
    """One official training step on a batch of patch features f [B, D], labels y [B]."""
    import torch
    import torch.nn.functional as F

    net.train()
    x = f + noise_std * torch.randn_like(f) if noise_std else f
    z = net(x)
    logits = z @ F.normalize(net.proxies, dim=-1).T / temperature
    ce = F.cross_entropy(logits, y, reduction="none")
    if batch_mean:  # B3, the logged runs
        c = ce.mean()
        loss = (1 - torch.exp(-c)) ** gamma * c
    else:
        p = torch.exp(-ce)
        loss = ((1 - p) ** gamma * ce).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


# ---------------------------------------------------------------------------------------------
# jad side
# ---------------------------------------------------------------------------------------------


def jad_trainer(*, hidden: int, k: int, rows: int, noise_std: float, **over):
    """A ProxyCore trainer without a backbone, its layout set for ``k`` proxies."""
    from jad.config_base import proxycore
    from jad.methods import proxycore as PC

    c = proxycore("synthetic")
    c.proxycore.hidden = hidden
    c.proxycore.noise_std = noise_std
    for key, v in over.items():
        c.proxycore[key] = v
    t = PC.ProxyCore(c, backbone=(None, None), mesh=False)
    t.progress = False
    t.layout = PC.Layout(patches=784, rows=rows, train=rows, proxies=k, padded=k)
    return t


def _state(t, key, labels):
    s = t.init(jax.random.PRNGKey(key), {})
    return s.replace(extras={"labels": jnp.asarray(labels, jnp.int32)})


def parity_check(batch: int = 512, hidden: int = 256, k: int = 1000) -> None:
    """One noise-free step of jad and the torch transcription from the same weights."""
    import adamp
    import torch

    from jad.train_lib.parallel import DataParallel, data_mesh, pad_to

    rng = np.random.default_rng(1)
    f = rng.standard_normal((batch, 1024)).astype(np.float32)
    y = rng.integers(0, k, batch).astype(np.int32)
    t = jad_trainer(hidden=hidden, k=k, rows=batch, noise_std=0.0)
    state = _state(t, 0, y)
    net = torch_model(1024, hidden, 1024, k)
    torch_load_from_jad(net, jax.device_get(state.params), jax.device_get(state.batch_stats))
    opt = adamp.AdamP(net.parameters(), lr=t.opts.lr, weight_decay=t.opts.weight_decay)
    dp = DataParallel(t.train_step, mesh=data_mesh(jax.devices()[:1]), donate=False)
    batch_ = pad_to({"features": f, "index": np.arange(batch, dtype=np.int32)}, batch)
    new, m = dp(dp.put_state(state), batch_)
    loss_t = torch_step(
        net, opt, torch.from_numpy(f), torch.from_numpy(y.astype(np.int64)), noise_std=0
    )
    diff = np.abs(np.asarray(new.params["proxies"]) - net.proxies.detach().numpy()) / t.opts.lr
    big = np.abs(net.proxies.grad.numpy()) > 1e-6
    kern = new.params["projection"]["fc2"]["dense"]["kernel"]
    diff_k = np.abs(np.asarray(kern) - net.projection_layer[3].weight.detach().numpy().T)
    print(
        f"parity (K={k}, hidden {hidden}, no noise, 1 step): loss jad {float(m['loss']):.6f} "
        f"torch {loss_t:.6f} (rel {abs(float(m['loss']) - loss_t) / abs(loss_t):.1e}); "
        f"max |param diff| / lr: proj fc2 {diff_k.max() / t.opts.lr:.4f}, proxies "
        f"{diff[big].max():.4f} where |grad| > 1e-6, {diff.max():.3f} overall (AdamP moves "
        f"entries whose gradient is near its eps 1e-8 in proportion to the gradient)",
        flush=True,
    )


def bench_step(k: int, steps: int, batch: int = 512, hidden: int = 4096, warmup: int = 2) -> None:
    """jad and torch steps alternate (same batches, same starting weights), so that a change in
    the machine's load during the run affects both; medians of ``steps`` steps after ``warmup``."""
    import adamp
    import torch

    from jad.train_lib.parallel import DataParallel, data_mesh, pad_to

    n = batch * (steps + warmup)
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((n, 1024)).astype(np.float32)
    labels = rng.integers(0, k, n).astype(np.int32)
    t = jad_trainer(hidden=hidden, k=k, rows=n, noise_std=1.0)
    state = _state(t, 0, labels)
    net = torch_model(1024, hidden, 1024, k)
    torch_load_from_jad(net, jax.device_get(state.params), jax.device_get(state.batch_stats))
    opt = adamp.AdamP(net.parameters(), lr=t.opts.lr, weight_decay=t.opts.weight_decay)
    tf, tl = torch.from_numpy(feats), torch.from_numpy(labels.astype(np.int64))
    dp = DataParallel(t.train_step, mesh=data_mesh(jax.devices()[:1]))
    s = dp.put_state(state)
    del state
    first = pad_to({"features": feats[:batch], "index": np.arange(batch, dtype=np.int32)}, batch)
    t0 = time.perf_counter()
    jax.block_until_ready(dp(s, first))  # compile (its result is dropped: same step again below)
    compile_s = time.perf_counter() - t0
    s = dp.put_state(_state(t, 0, labels))
    t_jad, t_torch = [], []
    for i in range(steps + warmup):
        rows = slice(i * batch, (i + 1) * batch)
        b = pad_to({"features": feats[rows], "index": np.arange(n, dtype=np.int32)[rows]}, batch)
        t0 = time.perf_counter()
        s, m = dp(s, b)
        jax.block_until_ready((s, m))
        t1 = time.perf_counter()
        torch_step(net, opt, tf[rows], tl[rows])
        t2 = time.perf_counter()
        if i >= warmup:
            t_jad.append(t1 - t0)
            t_torch.append(t2 - t1)
    tj, tt = float(np.median(t_jad)), float(np.median(t_torch))
    mem = 3 * k * 1024 * 4 / 2**30
    print(
        f"train step, batch {batch}, K={k} (proxies + 2 moments {mem:.2f} GiB), hidden {hidden}: "
        f"jad {tj:.3f} s (compile {compile_s:.1f} s) | torch {tt:.3f} s "
        f"({torch.get_num_threads()} threads) | torch/jad x{tt / tj:.2f}  "
        f"[per-step jad {' '.join(f'{x:.2f}' for x in t_jad)}; torch "
        f"{' '.join(f'{x:.2f}' for x in t_torch)}]",
        flush=True,
    )
    print(
        f"  an MVTec bottle epoch (321 steps) at these rates: jad {321 * tj / 60:.1f} min, "
        f"torch {321 * tt / 60:.1f} min",
        flush=True,
    )
    report.record(
        "proxycore",
        f"train step, batch {batch}, K={k}, hidden {hidden}",
        tj,
        "torch transcription (adamp)",
        tt,
        notes=f"median of {steps} steps; {torch.get_num_threads()} torch threads",
    )


def bench_memory(rows: int, ratio: float = 0.01) -> None:
    """Peak RSS of examples -> init_from_data -> finalize over ``rows`` random patch features."""
    from jad.methods.common import TrainData

    n_img = max(1, rows // 784)
    t = jad_trainer(hidden=64, k=1, rows=1, noise_std=1.0, pslabel_ratio=ratio, bank_ratio=ratio)
    base = _rss_bytes()
    feats = np.empty((n_img, 784, 1024), np.float32)
    rng = np.random.default_rng(0)
    for i in range(n_img):
        feats[i] = rng.standard_normal((784, 1024), dtype=np.float32)
    with_feats = _rss_bytes()
    with PeakRSS() as peak:
        t0 = time.perf_counter()
        data = t.examples(TrainData({"features": feats}, np.arange(n_img)))
        state = t.init(jax.random.PRNGKey(0), {})
        state = t.init_from_data(state, data, np.arange(data.num_examples))
        t1 = time.perf_counter()
        state = t.finalize(state, data)
        t2 = time.perf_counter()
    gib = feats.nbytes / 2**30
    print(
        f"host memory, {n_img * 784:,} patches ({gib:.2f} GiB features), coresets at {ratio:.0%}: "
        f"RSS {base / 2**30:.2f} -> {with_feats / 2**30:.2f} GiB with the features, peak "
        f"{peak.peak / 2**30:.2f} GiB during pseudo-labels ({t1 - t0:.1f} s) + finalize "
        f"({t2 - t1:.1f} s): peak - features-allocated = {(peak.peak - with_feats) / feats.nbytes:.2f}"
        f" x features (peak {(peak.peak - base) / feats.nbytes:.2f} x features above the start)",
        flush=True,
    )


# The child reports its own high-water mark (VmHWM: this process's memory since exec;
# getrusage's ru_maxrss can carry the forking parent's peak).
_CHILD = """
import runpy, sys
sys.argv = ["jad.train", *sys.argv[1:]]
try:
    runpy.run_module("jad.train", run_name="__main__")
except SystemExit as e:
    if e.code:
        raise
hwm = [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")]
print("PEAK_RSS_KIB", hwm[0], file=sys.stderr)
"""


def _child_train(config: str, workdir: str, *flags: str) -> tuple[dict, float, float]:
    """``python -m jad.train`` in a child process: (results.json, wall seconds, peak RSS bytes)."""
    cmd = [sys.executable, "-c", _CHILD, f"--config={config}", f"--workdir={workdir}", *flags]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=child_env(), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode:
        raise RuntimeError(f"{config} failed:\n{out.stderr[-2000:]}")
    kib = [int(x.split()[1]) for x in out.stderr.splitlines() if x.startswith("PEAK_RSS_KIB")]
    return json.loads(Path(workdir, "results.json").read_text()), wall, kib[-1] * 1024.0


def bench_synthetic(category: str = "weave") -> None:
    """configs/proxycore_synthetic.py on one category in a child process, and PatchCore on the
    same data in another (peak RSS reference: same backbone, data and runtime)."""
    common = [f"--config.data.categories={category}", "--config.eval.num_heatmaps=0", "--quiet"]
    with tempfile.TemporaryDirectory() as tmp:
        res, wall, peak = _child_train("proxycore_synthetic", f"{tmp}/p", *common)
        same_data = [
            "--config.data.synthetic_mode=hard",
            "--config.data.resize=128",
            "--config.data.crop=128",
            "--config.data.mask_mode=bilinear_gt0",
            "--config.data.batch_size=16",
        ]
        _, wall_pc, peak_pc = _child_train("patchcore_synthetic", f"{tmp}/c", *common, *same_data)
    d, tm = res["details"][category], res["timings"][category]
    spe = d["steps"] / d["epochs"]
    hist = d["history"]
    print(
        f"synthetic config ({category}: {d['train_images']:,} training patches, {int(spe)} "
        f"steps/epoch, {d['epochs']:.0f} epochs): epoch {tm['train_s'] / d['epochs']:.1f} s (steps, "
        f"evaluations, checkpoints), step {tm['step_s']:.3f} s; features {tm['features_s']:.1f} s, "
        f"pseudo-labels {tm['init_from_data_s']:.1f} s, bank {tm['finalize_s']:.1f} s, whole run "
        f"{wall:.0f} s; peak RSS {peak / 2**30:.2f} GiB (PatchCore on the same data "
        f"{peak_pc / 2**30:.2f} GiB, {wall_pc:.0f} s; cached features "
        f"{d['feature_cache']['gb'] * 1024:.0f} MiB); epoch-mean loss {hist[0]['loss']:.2f} -> "
        f"{hist[-1]['loss']:.2f}",
        flush=True,
    )


def compare(workdir: Path) -> None:
    """faithful vs fixed vs PatchCore on the synthetic set: same backbone, data, masks, test set."""
    from jad import config_files
    from jad import metrics as jm
    from jad.config_base import patchcore
    from jad.train_lib import runner

    runs = {}
    for variant in ("faithful", "fixed"):
        c = config_files.load("proxycore_synthetic")
        c.proxycore.variant = variant
        c.eval.num_heatmaps = 0
        runs[f"proxycore {variant}"] = c
    pc = patchcore("synthetic")
    ref = runs["proxycore fixed"]
    pc.backbone.weights = ref.backbone.weights
    pc.data.synthetic_mode = ref.data.synthetic_mode
    pc.data.resize, pc.data.crop = ref.data.resize, ref.data.crop
    pc.data.mask_mode = ref.data.mask_mode
    pc.data.batch_size = ref.data.batch_size
    pc.patchcore.coreset_ratio = ref.proxycore.bank_ratio
    pc.eval.num_heatmaps = 0
    runs["patchcore"] = pc
    table = {}
    for name, c in runs.items():
        t0 = time.perf_counter()
        res = runner.train_and_evaluate(c, workdir / name.replace(" ", "_"), progress=False)
        table[name] = res["metrics"]["mean"]
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    keys = jm.KEYS
    print(f"synthetic (hard, random backbone, {ref.data.crop} px), category means:", flush=True)
    print(f"{'':22s}" + "".join(f"{k:>14s}" for k in keys))
    for name, m in table.items():
        print(f"{name:22s}" + "".join(f"{(m[k] or float('nan')):14.4f}" for k in keys), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jad.benchmark proxycore", description=__doc__)
    parser.add_argument("--k", type=int, default=BOTTLE_K, help="number of proxies")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per framework")
    parser.add_argument("--hidden", type=int, default=4096, help="MLP hidden width (spec: 4096)")
    parser.add_argument("--memory-rows", type=int, default=100_352, help="patches (0: skip)")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--compare", action="store_true", help="faithful vs fixed vs PatchCore")
    parser.add_argument("--workdir", default="", help="--compare: keep the runs here")
    args = parser.parse_args(argv)

    import torch

    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform} x{len(jax.devices())}, torch "
        f"{torch.__version__}, {os.cpu_count()} CPU threads; ratios are torch/jad (> 1: jad faster)",
        flush=True,
    )
    parity_check()
    bench_step(args.k, args.steps, hidden=args.hidden)
    if args.memory_rows:
        bench_memory(args.memory_rows)
    if not args.skip_synthetic:
        bench_synthetic()
    if args.compare:
        if args.workdir:
            compare(Path(args.workdir))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                compare(Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
