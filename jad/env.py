"""Describe this machine for jad: ``python -m jad.env [--json]``.

Prints the devices JAX sees, the package versions, the CPU and its ISA, the ``XLA_*`` / ``JAX_*``
settings, the default matmul precision, and one measured fact: how far a float32 matmul at the
backend's default precision is from one at ``HIGHEST`` on the default device (0 on CPUs; about
1e-3 relative where the default is TF32 or bfloat16 passes, i.e. NVIDIA Ampere+ GPUs and TPUs:
the precision jad's backbone convolutions run at unless you pin it, see README "GPUs and TPUs").
"""

from __future__ import annotations

import json
import sys


def report() -> dict:
    """The environment as a dict (what the command prints)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jad.benchmarks.report import _version, machine_info

    info = machine_info()
    extra = ("optax", "orbax-checkpoint", "pillow", "jax-cuda12-plugin", "jax-cuda13-plugin")
    info["versions"].update({p: v for p in (*extra, "libtpu") if (v := _version(p))})
    info["devices"] = [
        {"platform": d.platform, "kind": d.device_kind, "id": d.id} for d in jax.devices()
    ]
    info["jax_backend"] = jax.default_backend()
    info["jax_default_matmul_precision"] = jax.config.jax_default_matmul_precision
    a = jax.random.normal(jax.random.key(0), (256, 256), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (256, 256), jnp.float32)
    exact = np.asarray(jnp.dot(a, b, precision=jax.lax.Precision.HIGHEST))
    default = np.asarray(jnp.dot(a, b))
    info["default_vs_highest_matmul_rel_diff"] = float(
        np.max(np.abs(default - exact)) / np.max(np.abs(exact))
    )
    return info


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv not in ([], ["--json"]):
        print("usage: python -m jad.env [--json]", file=sys.stderr)
        return 2
    info = report()
    if argv:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    width = max(len(k) for k in info)
    for k, v in info.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items()) or "-"
        elif isinstance(v, list):
            v = ", ".join(
                "/".join(str(x) for x in d.values()) if isinstance(d, dict) else str(d) for d in v
            )
        print(f"{k:<{width}}  {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
