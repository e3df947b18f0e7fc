"""Bit-equality of jad's sharded kernels on 1 vs 2/4/8 devices, as a plain script.

``.ci/run`` runs it under ``qemu-x86_64 -cpu Haswell-v4`` (an AVX2-only CPU model): XLA:CPU's
matmul kernels (YNNPACK) pick their ISA from cpuid at run time and ignore
``--xla_cpu_max_isa``, so emulation is the only way to get the AVX2 kernels on an AVX-512
machine. Small shapes keep it to about two minutes under emulation. Exit status 1 on any mismatch.
"""

from __future__ import annotations

import os
import sys

_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh  # noqa: E402

from jad.ops import greedy_coreset, knn  # noqa: E402


def main() -> int:
    devs = np.array(jax.devices())
    failures = []
    checks = 0
    for n in (216, 1000):  # 216 rows on 8 devices was the failing case on AVX2
        bank = jax.random.normal(jax.random.key(n), (n, 1024))
        q = jax.random.normal(jax.random.key(1), (576, 1024)) * 0.3 + bank[0]
        d1, i1 = (np.asarray(a) for a in knn(q, bank, 1))
        c1 = np.asarray(greedy_coreset(bank, ratio=0.25, key=jax.random.key(2)))
        for shards in (2, 8):
            mesh = Mesh(devs[:shards], ("data",))
            d, i = (np.asarray(a) for a in knn(q, bank, 1, mesh=mesh))
            c = np.asarray(greedy_coreset(bank, ratio=0.25, key=jax.random.key(2), mesh=mesh))
            for what, ok in (
                ("knn distances", np.array_equal(d, d1)),
                ("knn indices", np.array_equal(i, i1)),
                ("coreset picks", np.array_equal(c, c1)),
            ):
                checks += 1
                if not ok:
                    failures.append(f"N={n} on {shards} devices: {what} differ from 1 device")
    for f in failures:
        print("MISMATCH", f)
    print(f"determinism probe: {checks - len(failures)}/{checks} bit-identical")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
