"""Benchmarks: ``python -m jad.benchmark {backbone,kernels,data,metrics,patchcore,proxycore,pbas,
apc} [flags]``, ``all`` (every one at a size preset -> bench.json + bench.md) and ``readme``
(rewrites README's generated performance table from a bench.json).

Every benchmark measures jad against a peer (torch, faiss-cpu, numpy, PIL, scikit-learn) in the
same process and prints the ratio; none of them asserts a time.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "backbone": "jad.benchmarks.backbone",
    "kernels": "jad.benchmarks.kernels",
    "data": "jad.benchmarks.data",
    "metrics": "jad.benchmarks.metrics",
    "proxycore": "jad.benchmarks.proxycore",
    "pbas": "jad.benchmarks.pbas",
    "apc": "jad.benchmarks.apc",
    "scale": "jad.benchmarks.scale",
    "patchcore": "jad.benchmarks.patchcore",
    "all": "jad.benchmarks.suite",
    "readme": "jad.benchmarks.readme",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m jad.benchmark {{{','.join(COMMANDS)}}} [flags]", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
