"""APC fine-tuning step: jad (jitted ``APC.train_step``, ``apc.remat`` on and off) vs the PyTorch
transcription ``jad.benchmarks.torch_apc``, same CPU, same weights, same batch.

    python -m jad.benchmark apc [--arch wide_resnet50_2|resnet50] [--size 224] [--normal 2]
                                [--anomalous 2] [--repeats 3] [--width 1.0] [--threads N]
                                [--torch-channels-last] [--no-remat] [--verbose]

Random backbone (jad's init) and decoder (jad's ``APC.init``; torch copies them with
``load_from_jad``), random ImageNet-normalised images, random masks on the anomalous ones. Both
sides run the same computation: jad with ``apc.augment=none`` and ``apc.jitter=0`` (the torch
peer has no augmentation) and ``apc.warmup_steps=0`` (torch's learning rates are constant), so the
first losses of both sides must agree (printed as a check).

Method. Three worker processes, one per variant (jad remat off, jad remat on, torch), each
started, initialised, compiled and warmed up (one step) in turn, then driven over a pipe so the
timed steps run *alternately* (one step of each variant per round, ``--repeats`` rounds; the idle
workers wait on their pipe and use no CPU). Separate processes keep the memory numbers apart:

- step time: wall time of one step (jad: ``jax.block_until_ready`` of the new state and metrics;
  torch: forward, backward, clipping, AdamW), min and median over the rounds; ratio torch / jad
  of the minima (goal >= 1.0);
- jad compiled memory: ``memory_analysis()`` of the compiled step (one device; state donated):
  temp + argument sizes, remat on vs off (what remat saves), and the number of convolutions in
  the lowered and the compiled program (remat's recomputation shows there unless the compiler
  merged it away, as XLA:CPU does in jax 0.10: no optimisation barrier survives compilation and
  the compiled step has as many convolutions with remat as without, and the same temp size);
- process RSS: before each timed step the worker returns freed heap pages to the kernel (glibc
  ``malloc_trim(0)``; torch's gradients are released after each step with
  ``zero_grad(set_to_none=True)`` so that, like jad's, they are step temporaries), resets the
  kernel's peak-RSS mark (``/proc/self/clear_refs`` = 5; a 2 ms sampling thread where that is
  refused) and reports ``peak RSS during the step - RSS before it`` (the step's transient memory:
  activations, gradients, workspaces) and the steady RSS between steps (model, optimiser state,
  runtime); max over rounds.

Defaults: WRN50-2 at 224 px and decoder width 1.0 as the spec, but **2 normal + 2 anomalous
images** instead of the spec's 8 + 8. Measured on the shared 2-core CPU this was written on
(load 5-8): a 16-image step takes ~70-150 s per variant (beyond the ~60 s a default step may
take), 8 images ~35-60 s (the whole run ~13 min), 4 images ~16-25 s: the defaults finish in
~4-7 minutes (three inits + XLA compiles of ~30-50 s each, four steps per variant).
``--normal 8 --anomalous 8`` runs the spec's batch. For a quick look: ``--arch resnet50
--size 128 --normal 2 --anomalous 2``. Both sides use ``--threads`` threads (default: all cores;
``torch.set_num_threads``; XLA uses the cores it has); the torch peer runs NCHW (measured faster
than ``--torch-channels-last`` here). No timed assertions: this prints what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from jad.benchmarks import child_env, report
from jad.utils.memory import trim_heap

VARIANTS = ("jad", "jad_remat", "torch")
LABELS = {
    "jad": "jad  remat off",
    "jad_remat": "jad  remat on ",
    "torch": "torch         ",
}


# ---------------------------------------------------------------------------------------------
# Memory probes (Linux /proc)
# ---------------------------------------------------------------------------------------------
def _status_bytes(field: str) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return -1


def _rss() -> int:
    return _status_bytes("VmRSS")


class PeakRSS:
    """Peak RSS inside a ``with`` block, minus the RSS at its start (bytes): ``.delta``.

    Resets the kernel's high-water mark (``/proc/self/clear_refs`` = 5, Linux >= 4.0) and reads
    ``VmHWM`` at exit; where the reset is refused, a thread samples ``VmRSS`` every 2 ms.
    """

    def __enter__(self):
        self.method = "VmHWM"
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            self.method = "sampled"
        self.before = _rss()
        self.peak = self.before
        if self.method == "sampled":
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        if self.method == "sampled":
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss())
        else:
            self.peak = max(_status_bytes("VmHWM"), self.before)
        self.delta = self.peak - self.before
        return False


# ---------------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------------
def _config(args, remat: bool):
    from jad.config_base import apc as apc_config

    c = apc_config("synthetic")
    c.backbone.arch = args.arch
    c.backbone.weights = "random"
    c.data.resize = c.data.crop = args.size
    c.apc.decoder_width = args.width
    c.apc.anomalous_batch = args.anomalous
    c.apc.augment = "none"  # the torch peer has no augmentation
    c.apc.jitter = 0.0
    c.apc.warmup_steps = 0  # lr(step 0) = the peaks = torch's constant learning rates
    c.apc.remat = remat
    c.train.batch_size = args.normal
    c.train.steps = 10**6
    return c


def _inputs(args):
    import numpy as np

    n = args.normal + args.anomalous
    rng = np.random.default_rng(0)
    images = rng.standard_normal((n, args.size, args.size, 3)).astype(np.float32)
    masks = np.zeros((n, args.size, args.size), np.float32)
    for i in range(args.normal, n):  # a random rectangle per anomalous image
        h, w = rng.integers(args.size // 8, args.size // 2, 2)
        y, x = rng.integers(0, args.size - h), rng.integers(0, args.size - w)
        masks[i, y : y + h, x : x + w] = 1
    labels = np.array([0] * args.normal + [1] * args.anomalous, np.int32)
    return images, masks, labels


def _jad_state(args, remat: bool):
    import jax

    from jad.methods import apc

    trainer = apc.APC(_config(args, remat))
    trainer.begin_category("disc")
    images, _, _ = _inputs(args)
    # rbg: the decoder's random kernels compile several times faster than with threefry; the
    # values differ from threefry's but are the same in every worker (torch copies them)
    with jax.default_prng_impl("rbg"):
        state = jax.jit(trainer.init)(jax.random.key(args.seed), {"image": images[:1]})
    return trainer, state


def _worker_jad(args, send, recv, remat: bool):
    import jax
    import numpy as np

    t0 = time.perf_counter()
    trainer, state = _jad_state(args, remat)
    if args.state_out:  # the torch worker copies these weights
        flat = {}
        for part in ("params", "batch_stats"):
            tree = jax.device_get(getattr(state, part))
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
                flat[part + "/" + "/".join(p.key for p in path)] = np.asarray(leaf)
        np.savez(args.state_out, **flat)
    t_init = time.perf_counter() - t0
    images, masks, labels = _inputs(args)
    n = len(labels)
    batch = jax.device_put(
        {
            "image": images,
            "gt_mask": masks,
            "label": labels,
            "mask": np.ones(n, np.float32),
            "index": np.arange(n, dtype=np.int32),
        }
    )
    t0 = time.perf_counter()
    lowered = jax.jit(trainer.train_step, donate_argnums=0).lower(state, batch)
    compiled = lowered.compile()
    t_compile = time.perf_counter() - t0
    convs = {  # remat shows as recomputed convolutions, unless the compiler merged them away
        "lowered": lowered.as_text().count("stablehlo.convolution"),
        "compiled": compiled.as_text().count(" convolution("),
    }
    del lowered
    ma = compiled.memory_analysis()
    mem = {
        k: int(getattr(ma, k + "_in_bytes", 0) or 0)
        for k in ("argument_size", "output_size", "alias_size", "temp_size", "peak_memory")
    }
    box = {"state": state}

    def step():
        s, m = compiled(box["state"], batch)
        jax.block_until_ready((s, m))
        box["state"] = s
        return float(m["loss"])

    loss0 = step()  # warm-up (first execution)
    send(
        {
            "ready": True,
            "init_s": t_init,
            "compile_s": t_compile,
            "memory_analysis": mem,
            "convolutions": convs,
            "loss0": loss0,
            "rss": _rss(),
            "backend": f"jax {jax.__version__} ({jax.default_backend()}, "
            f"{jax.devices()[0].device_kind}, 1 of {jax.device_count()} device(s))",
        }
    )
    _serve(send, recv, step)


def _worker_torch(args, send, recv):
    import numpy as np
    import torch

    from jad.benchmarks import torch_apc as T

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    flat = dict(np.load(args.state_in))
    trees: dict = {"params": {}, "batch_stats": {}}
    for key, value in flat.items():
        *path, leaf = key.split("/")
        node = trees
        for p in path:
            node = node.setdefault(p, {})
        node[leaf] = value
    model = T.TorchAPC(args.arch, width=args.width, channels_last=args.torch_channels_last)
    model.load_from_jad(trees["params"], trees["batch_stats"])
    del flat, trees
    c = _config(args, False).apc
    opt = T.make_optimizer(
        model, lr_encoder=c.lr_encoder, lr_head=c.lr_head, weight_decay=c.weight_decay
    )
    images, masks, labels = _inputs(args)
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    m, y = torch.from_numpy(masks), torch.from_numpy(labels)
    t_init = time.perf_counter() - t0

    def step():
        loss = T.train_step(model, opt, x, m, y, clip_norm=c.clip_norm)["loss"]
        opt.zero_grad(set_to_none=True)  # gradients are step temporaries, as in jad
        return loss

    loss0 = step()  # warm-up (oneDNN primitive caches, allocator)
    fmt = "channels_last" if args.torch_channels_last else "NCHW"
    send(
        {
            "ready": True,
            "init_s": t_init,
            "compile_s": 0.0,
            "loss0": loss0,
            "rss": _rss(),
            "backend": f"torch {torch.__version__} ({torch.get_num_threads()} threads, {fmt})",
        }
    )
    _serve(send, recv, step)


def _serve(send, recv, step):
    while True:
        cmd = recv()
        if cmd is None or cmd == "quit":
            return
        trim_heap()  # the RSS before a step counts live memory only
        with PeakRSS() as peak:
            t0 = time.perf_counter()
            loss = step()
            dt = time.perf_counter() - t0
        send(
            {
                "t": dt,
                "loss": loss,
                "rss_before": peak.before,
                "peak_delta": peak.delta,
                "peak_method": peak.method,
            }
        )


def _worker_main(args) -> int:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # library chatter goes to stderr; stdout carries the protocol only
    sys.stdout = sys.stderr

    def send(obj):
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    def recv():
        line = sys.stdin.readline()
        return line.strip() if line else None

    if args.worker == "torch":
        _worker_torch(args, send, recv)
    else:
        _worker_jad(args, send, recv, remat=args.worker == "jad_remat")
    return 0


class _Worker:
    def __init__(self, variant: str, args, extra: list[str]):
        cmd = [sys.executable, "-m", "jad.benchmarks.apc", "--worker", variant, *extra]
        cmd += [
            f"--arch={args.arch}",
            f"--size={args.size}",
            f"--normal={args.normal}",
            f"--anomalous={args.anomalous}",
            f"--width={args.width}",
            f"--threads={args.threads}",
            f"--seed={args.seed}",
        ]
        if args.torch_channels_last:
            cmd.append("--torch-channels-last")
        self.variant = variant
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None if args.verbose else subprocess.DEVNULL,
            text=True,
            env=child_env(),
        )

    def recv(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            rc = self.proc.wait()
            raise RuntimeError(
                f"{self.variant} worker exited with status {rc} (rerun with --verbose)"
            )
        return json.loads(line)

    def ask(self, cmd: str) -> dict:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.recv()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------
def _gib(b: float) -> str:
    return f"{b / 2**30:6.2f} GiB"


def _fmt(ts: list[float]) -> str:
    return f"min {min(ts):7.2f} s  median {statistics.median(ts):7.2f} s"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jad.benchmark apc", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--arch", choices=("wide_resnet50_2", "resnet50"), default="wide_resnet50_2")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--normal", type=int, default=2, help="normal images per step (spec: 8)")
    p.add_argument("--anomalous", type=int, default=2, help="anomalous images per step (spec: 8)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--torch-channels-last",
        action="store_true",
        help="run the torch peer in channels_last memory format (default NCHW)",
    )
    p.add_argument(
        "--no-remat", action="store_true", help="skip the jad remat-on worker (a quicker run)"
    )
    p.add_argument("--verbose", action="store_true", help="show the workers' stderr")
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--state-out", help=argparse.SUPPRESS)
    p.add_argument("--state-in", help=argparse.SUPPRESS)
    return p


def _remat_comparison(ready: dict, ma: dict, times: dict) -> None:
    """Prints what remat saves (memory, time) and the convolution counts of both programs."""
    saved = ma["jad"]["temp_size"] - ma["jad_remat"]["temp_size"]
    print(
        f"   remat saves {_gib(saved)} of temp memory "
        f"({100 * saved / max(ma['jad']['temp_size'], 1):.0f} %), step time "
        f"{100 * (min(times['jad_remat']) / min(times['jad']) - 1):+.0f} % (min vs min)"
    )
    cv = {v: ready[v]["convolutions"] for v in ("jad", "jad_remat")}
    print(
        f"   convolutions in the step program: remat off {cv['jad']['lowered']} lowered -> "
        f"{cv['jad']['compiled']} compiled; remat on {cv['jad_remat']['lowered']} lowered -> "
        f"{cv['jad_remat']['compiled']} compiled"
    )
    if cv["jad_remat"]["compiled"] <= cv["jad"]["compiled"]:
        print(
            "   note: the compiler merged remat's recomputation away (no optimisation barrier "
            "survives in the compiled program, which has as many convolutions as without remat), "
            "so on this backend apc.remat does not reduce memory"
        )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.worker:
        return _worker_main(args)
    if args.size % 32:
        print(f"--size must be a multiple of 32 (got {args.size})", file=sys.stderr)
        return 2

    n = args.normal + args.anomalous
    print(
        f"APC fine-tuning step: {args.arch} at {args.size} px, batch {args.normal} normal + "
        f"{args.anomalous} anomalous, decoder width {args.width}, {args.threads} thread(s), "
        f"{args.repeats} alternating round(s)"
    )
    print(
        "same computation both sides: jad apc.augment=none, jitter 0, warm-up 0; torch = "
        "jad.benchmarks.torch_apc with jad's initial weights"
    )
    if n < 16:
        print(
            f"(the spec's step has 8 + 8 images; {n} here to keep a CPU run short: a 16-image step "
            "takes minutes per variant on 2 cores; --normal 8 --anomalous 8 runs the spec's batch)"
        )
    active = tuple(v for v in VARIANTS if not (args.no_remat and v == "jad_remat"))
    jads = tuple(v for v in active if v != "torch")
    workers: dict[str, _Worker] = {}
    ready: dict[str, dict] = {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="jad_apc_bench_") as tmp:
        state_file = str(Path(tmp) / "state.npz")
        try:
            for variant, extra in (
                ("jad", [f"--state-out={state_file}"]),
                ("jad_remat", []),
                ("torch", [f"--state-in={state_file}"]),
            ):
                if variant not in active:
                    continue
                t0 = time.perf_counter()
                workers[variant] = _Worker(variant, args, extra)
                ready[variant] = workers[variant].recv()
                r = ready[variant]
                print(
                    f"  started {LABELS[variant].strip():14s} in {time.perf_counter() - t0:6.1f} s "
                    f"(init {r['init_s']:5.1f} s, compile {r['compile_s']:5.1f} s, first step "
                    f"loss {r['loss0']:.6g}); {r['backend']}",
                    flush=True,
                )
            runs: dict[str, list[dict]] = {v: [] for v in active}
            for rnd in range(args.repeats):
                for variant in active:
                    runs[variant].append(workers[variant].ask("step"))
                print(
                    f"  round {rnd + 1}: "
                    + ", ".join(f"{v} {runs[v][-1]['t']:.2f} s" for v in active),
                    flush=True,
                )
        finally:
            for w in workers.values():
                w.close()

    times = {v: [r["t"] for r in runs[v]] for v in active}
    print(f"\n1. step time ({n} images at {args.size} px, one device / process each)")
    for v in active:
        print(f"   {LABELS[v]} {_fmt(times[v])}   ({n / min(times[v]):.2f} images/s)")
    for v in jads:
        report.record(
            "apc",
            f"fine-tuning step, {args.arch} {args.size} px, {args.normal}+{args.anomalous} images, "
            f"decoder width {args.width}, remat {'on' if v == 'jad_remat' else 'off'}",
            min(times[v]),
            "torch transcription",
            min(times["torch"]),
            notes=f"min of {args.repeats} alternating rounds, one process each",
        )
        print(
            f"   ratio torch/jad ({LABELS[v].strip()}) = "
            f"{min(times['torch']) / min(times[v]):.2f} (min)  "
            f"{statistics.median(times['torch']) / statistics.median(times[v]):.2f} (median)  "
            "(goal >= 1.0)"
        )
    l_jad, l_torch = ready["jad"]["loss0"], ready["torch"]["loss0"]
    l_remat = f"{ready['jad_remat']['loss0']:.6g}" if "jad_remat" in ready else "(not run)"
    agree = abs(l_jad - l_torch) / max(abs(l_jad), 1e-12)
    print(
        f"   check: first-step loss jad {l_jad:.6g} / jad remat {l_remat} / torch {l_torch:.6g} "
        f"(relative difference jad-torch {agree:.1e}); after warm-up + {args.repeats} steps "
        f"jad {runs['jad'][-1]['loss']:.6g}, torch {runs['torch'][-1]['loss']:.6g}"
    )

    print("\n2. jad compiled step, memory_analysis() (one device, state donated)")
    ma = {v: ready[v]["memory_analysis"] for v in jads}
    for v in jads:
        m = ma[v]
        peak = f", XLA peak_memory {_gib(m['peak_memory'])}" if m.get("peak_memory") else ""
        print(
            f"   {LABELS[v]} temp {_gib(m['temp_size'])} + argument {_gib(m['argument_size'])} "
            f"= {_gib(m['temp_size'] + m['argument_size'])}  (output {_gib(m['output_size'])}, "
            f"aliased {_gib(m['alias_size'])}{peak})"
        )
    if "jad_remat" in ready:
        _remat_comparison(ready, ma, times)

    method = runs["torch"][0]["peak_method"]
    how = (
        "kernel high-water mark VmHWM, reset via /proc/self/clear_refs before each step"
        if method == "VmHWM"
        else "VmRSS sampled every 2 ms"
    )
    print(f"\n3. process RSS (one process per variant; {how})")
    print(
        "   transient = max over timed steps of (peak RSS during the step - RSS before it), "
        "freed heap pages returned to the kernel (malloc_trim) before each step"
    )
    for v in active:
        delta = max(r["peak_delta"] for r in runs[v])
        steady = max(r["rss_before"] for r in runs[v])
        print(f"   {LABELS[v]} transient {_gib(delta)}   steady RSS between steps {_gib(steady)}")
    print(
        "   (steady RSS includes each runtime's libraries, compiled code / primitive caches, the "
        "model and AdamW state; the transient part is the step's activations, gradients and "
        "workspaces: for jad about memory_analysis' temp size)"
    )
    print(f"\ntotal wall time {time.perf_counter() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
