"""WRN50-2 forward to layer3: jad (Flax, jit) vs torch CPU (NCHW, channels_last), same process.

    python -m jad.benchmark backbone [--batch 8] [--size 224] [--repeats 7]

Random weights (torch init), shared: the torch model's ``state_dict`` goes through jad's converter
(``torch_to_flax``). Variants are timed round-robin (one call each per round) to spread machine
noise evenly; min and median over ``--repeats`` rounds are printed. Then the CPU's fp32 matmul
floor: best GFLOP/s of ``jnp.dot`` on 2048x2048 fp32, FLOPs of the forward (counted from the conv
shapes in the jaxpr, cross-checked with XLA's cost analysis), floor = FLOPs / peak. Last line:
``time ratio jad/torch = X`` (jad min over torch NCHW min).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jad.benchmarks import report
from jad.models.convert import torch_to_flax
from jad.models.features import make_feature_fn
from jad.models.wide_resnet import wide_resnet50_2

STAGE = "layer3"


try:
    from jax.extend.core import jaxprs_in_params as _jaxprs_in_params
except ImportError:  # older jax
    from jax.core import jaxprs_in_params as _jaxprs_in_params


def conv_flops(fn: Callable, *args) -> float:
    """2 * MACs of every convolution in ``fn``'s jaxpr (output elements x kh*kw*Cin/groups)."""
    total = 0.0

    def walk(jaxpr):
        nonlocal total
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "conv_general_dilated":
                out = eqn.outvars[0].aval.shape
                rhs = eqn.invars[1].aval.shape
                dn = eqn.params["dimension_numbers"]
                k_spatial = np.prod([rhs[d] for d in dn.rhs_spec[2:]])
                cin_per_group = rhs[dn.rhs_spec[1]]
                total += 2.0 * np.prod(out) * k_spatial * cin_per_group
            for sub in _jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return total


def matmul_peak_gflops(n: int = 2048, reps: int = 10) -> float:
    """Best fp32 GFLOP/s of a jitted ``jnp.dot`` of two n x n matrices."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(jnp.dot)
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 / best / 1e9


def _torch_reference():
    from jad.benchmarks import torch_wrn50

    return torch_wrn50


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m jad.benchmark backbone", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("benchmark backbone needs torch: pip install 'jad[bench]'", file=sys.stderr)
        return 1
    torch_wrn50 = _torch_reference()
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    torch.manual_seed(0)

    net = torch_wrn50.wide_resnet50_2().eval()
    sd = {k: v.numpy() for k, v in net.state_dict().items()}
    variables, _ = torch_to_flax(sd, "wide_resnet50_2")
    variables = jax.device_put(variables)
    module = wide_resnet50_2()

    b, s = args.batch, args.size
    x_np = np.random.default_rng(0).normal(size=(b, s, s, 3)).astype(np.float32)
    x_jax = jax.device_put(x_np)
    x_nchw = torch.from_numpy(np.ascontiguousarray(x_np.transpose(0, 3, 1, 2)))
    net_cl = torch_wrn50.wide_resnet50_2().eval()
    net_cl.load_state_dict(net.state_dict())
    net_cl = net_cl.to(memory_format=torch.channels_last)
    x_cl = x_nchw.contiguous(memory_format=torch.channels_last)

    fast = make_feature_fn(module, "stages", stages=(STAGE,))
    default = make_feature_fn(module, "stages", stages=(STAGE,), compiler_options={})
    t0 = time.perf_counter()
    fast.compile(variables, x_jax)
    t_compile = time.perf_counter() - t0
    if fast.compiler_options:
        default.compile(variables, x_jax)

    def run_jax(fn):
        return lambda: fn(variables, x_jax)[STAGE].block_until_ready()

    def run_torch(model, x):
        def f():
            with torch.inference_mode():
                return model.forward_stages(x, (STAGE,))[STAGE]

        return f

    variants = {f"jad Flax NHWC, options {fast.compiler_options or 'none'}": run_jax(fast)}
    if fast.compiler_options:  # for reference: what the options buy
        variants["jad Flax NHWC, XLA defaults"] = run_jax(default)
    variants["torch NCHW"] = run_torch(net, x_nchw)
    variants["torch channels_last"] = run_torch(net_cl, x_cl)
    # numerics sanity: same weights -> same features
    ref = run_torch(net, x_nchw)().numpy().transpose(0, 2, 3, 1)
    got = np.asarray(fast(variables, x_jax)[STAGE])
    max_err = float(np.abs(got - ref).max()) / float(np.abs(ref).max())
    times: dict[str, list[float]] = {k: [] for k in variants}
    for f in variants.values():  # warm-up
        f()
    for _ in range(args.repeats):
        for name, f in variants.items():
            t = time.perf_counter()
            f()
            times[name].append((time.perf_counter() - t) * 1e3)

    flops = conv_flops(lambda v, x: module.apply(v, x, stages=(STAGE,)), variables, x_jax)
    xla_flops = None
    try:
        ca = (
            jax.jit(lambda v, x: module.apply(v, x, stages=(STAGE,)))
            .lower(variables, x_jax)
            .compile()
            .cost_analysis()
        )
        ca = ca[0] if isinstance(ca, list | tuple) else ca
        xla_flops = float(ca.get("flops", float("nan")))
    except Exception:  # cost analysis is best effort
        pass
    peak = matmul_peak_gflops()
    floor_ms = flops / (peak * 1e9) * 1e3

    print(f"WRN50-2 forward to {STAGE}, batch {b} x 3 x {s}^2, fp32, random weights, "
          f"{threads} threads, {args.repeats} rounds; {jax.devices()[0].device_kind} / torch {torch.__version__}")  # fmt: skip
    print(
        f"jad compile: {t_compile:.1f} s; jad vs torch at {STAGE}: max abs diff / max abs = {max_err:.1e}"
    )
    width = max(len(k) for k in times)
    for name, ts in times.items():
        print(f"  {name:<{width}}  min {min(ts):8.1f} ms   median {statistics.median(ts):8.1f} ms")
    xla_txt = f" (XLA cost analysis: {xla_flops / 1e9:.2f})" if xla_flops else ""
    print(
        f"FLOPs (conv, from jaxpr): {flops / 1e9:.2f} GFLOP = {flops / b / 1e9:.2f} per image{xla_txt}"
    )
    print(
        f"fp32 matmul peak (jnp.dot 2048^2, best of 10): {peak:.0f} GFLOP/s -> floor {floor_ms:.1f} ms"
    )
    jad_name = next(iter(variants))
    jad_ms = min(times[jad_name])
    per_round = [a / b for a, b in zip(times[jad_name], times["torch NCHW"], strict=True)]
    print(f"median of per-round ratios jad/torch NCHW = {statistics.median(per_round):.3f}")
    print(f"jad / floor = {jad_ms / floor_ms:.2f}")
    print(f"time ratio jad/torch = {jad_ms / min(times['torch NCHW']):.3f}")
    notes = (
        f"min of {args.repeats} rounds, {threads} threads; jad/floor {jad_ms / floor_ms:.2f}; "
        f"max rel diff {max_err:.0e}"
    )
    if fast.compiler_options:
        notes += f"; jad with XLA defaults {min(times['jad Flax NHWC, XLA defaults']):.1f} ms"
    for peer in ("torch NCHW", "torch channels_last"):
        report.record(
            "backbone",
            f"WRN50-2 forward to {STAGE}, batch {b} x {s}², fp32",
            jad_ms / 1e3,
            peer,
            min(times[peer]) / 1e3,
            notes=notes,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
