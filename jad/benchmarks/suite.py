"""Every benchmark at one size preset, results to JSON and Markdown.

    python -m jad.benchmark all --out=bench.json [--size smoke|default] [--only a,b,...]

Runs, in this process and in this order, ``backbone``, ``kernels``, ``patchcore`` (per stage),
``pbas``, ``proxycore`` (train step), ``apc`` (train step), ``metrics`` and ``data`` with the
flags of the preset (:data:`PRESETS`; ``smoke``: tiny inputs, a couple of minutes at most on 2
cores, numbers meaningless; ``default``: the sizes the README quotes, tens of minutes on 2
cores). Each sub-benchmark prints what it always prints and records its jad-vs-peer rows
(``jad.benchmarks.report``). A sub-benchmark that raises or exits non-zero is recorded as failed
and the next one runs; the exit status is 1 if any failed. One whose peer package is missing
(torch for the torch transcriptions) is recorded as skipped, not failed.

Writes ``--out`` (rows + machine: CPU model, cores, versions, XLA/JAX flags, date, load; per
sub-benchmark flags, wall time and status) after every sub-benchmark, and the Markdown table next
to it (same name, ``.md``). ``python -m jad.benchmark readme`` copies the table into README.md.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from jad.benchmarks import report

ORDER = ("backbone", "kernels", "patchcore", "pbas", "proxycore", "apc", "metrics", "data", "scale")

# Packages a sub-benchmark cannot run without (its peer is the point of it).
NEEDS = {
    "backbone": ("torch",),
    "pbas": ("torch",),
    "proxycore": ("torch", "adamp"),
    "apc": ("torch",),
}

PRESETS: dict[str, dict[str, list[str]]] = {
    "smoke": {
        "backbone": ["--batch", "1", "--size", "64", "--repeats", "1"],
        "kernels": ["--size", "smoke"],
        "patchcore": [
            "--train-images=4",
            "--test-images=2",
            "--image-size=64",
            "--batch=2",
            "--repeats=1",
            "--peer-steps=20",
        ],
        "pbas": [
            "--image-size=64",
            "--train-images=8",
            "--test-images=8",
            "--epochs=1",
            "--repeats=1",
        ],
        "proxycore": [
            "--k=1000",
            "--hidden=512",
            "--steps=1",
            "--memory-rows=0",
            "--skip-synthetic",
        ],
        "apc": [
            "--arch=resnet50",
            "--size=64",
            "--normal=1",
            "--anomalous=1",
            "--width=0.25",
            "--repeats=1",
            "--no-remat",
        ],
        "metrics": ["--images=20", "--size=64"],
        "data": ["--image-size=64", "--workers=0", "--repeats=1", "--epochs=1"],
        "scale": ["--rows=40000", "--dim=128", "--ratio=0.005"],
    },
    "default": {
        "backbone": ["--batch=8", "--size=224", "--repeats=7"],
        "kernels": ["--size=small"],
        "patchcore": [
            "--train-images=32",
            "--test-images=16",
            "--image-size=224",
            "--batch=8",
            "--repeats=3",
        ],
        "pbas": [],  # 288 px, 24 train / 16 test images, 2 epochs, 5 repeats
        "proxycore": ["--steps=5", "--memory-rows=0", "--skip-synthetic"],
        "apc": [],  # WRN50-2, 224 px, 2 + 2 images, remat on and off, 3 rounds
        "metrics": [],  # 1725 images of 224² (MVTec AD's test set size), sklearn on all pixels
        "data": [],  # 256² synthetic images -> 224², workers 0,1,2,4, 3 x 3 epochs
        # on-disk bank: 250 k x 1024 (1 GiB of features), 1 % coreset; the 1 M x 1024 run of the
        # issue is `python -m jad.benchmark scale` alone (its default), about 20 min here
        "scale": ["--rows=250000", "--ratio=0.01"],
    },
}


def _missing(name: str) -> list[str]:
    return [p for p in NEEDS.get(name, ()) if importlib.util.find_spec(p) is None]


def run_one(name: str, argv: list[str]) -> tuple[dict[str, Any], list[report.Row]]:
    """Runs one sub-benchmark in this process: (run record, its rows). Never raises Exception."""
    from jad.benchmark import COMMANDS

    run: dict[str, Any] = {"name": name, "argv": argv}
    missing = _missing(name)
    if missing:
        run.update(status="skipped", seconds=0.0, error=f"{', '.join(missing)} not installed")
        note = f"skipped: {', '.join(missing)} not installed (pip install 'jad[bench]')"
        return run, [report.Row(name, "(all cases)", None, notes=note)]
    report.take()  # rows left over by anything else are not this benchmark's
    print(f"\n===== {name} {' '.join(argv)}", flush=True)
    t0 = time.perf_counter()
    try:
        rc = importlib.import_module(COMMANDS[name]).main(list(argv))
        run["status"] = "ok" if not rc else f"exit status {rc}"
    except SystemExit as e:  # argparse errors, sys.exit inside a benchmark
        run["status"] = "ok" if not e.code else f"exit status {e.code}"
    except Exception as e:
        traceback.print_exc()
        run.update(status="failed", error=f"{type(e).__name__}: {e}".strip()[:500])
        run["traceback"] = traceback.format_exc()[-4000:]
    run["seconds"] = round(time.perf_counter() - t0, 2)
    if run["status"] != "ok":
        run.setdefault("error", run["status"])
    rows = report.take()
    if run["status"] != "ok":
        rows.append(report.Row(name, "(failed)", None, notes=f"{run['status']}: {run['error']}"))
    print(f"===== {name}: {run['status']} in {run['seconds']:.1f} s", flush=True)
    return run, rows


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jad.benchmark all", description=__doc__)
    p.add_argument("--out", default="bench.json", help="JSON results (Markdown next to it)")
    p.add_argument("--size", choices=tuple(PRESETS), default="default")
    p.add_argument("--only", default="", help=f"comma-separated subset of {','.join(ORDER)}")
    p.add_argument(
        "--update",
        action="store_true",
        help="keep --out's rows of the benchmarks not rerun (e.g. rerun one that failed)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = _parser()
    args = p.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(ORDER)
    unknown = sorted(set(names) - set(ORDER))
    if unknown:
        p.error(
            f"--only: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(ORDER)}"
        )
    names = [n for n in ORDER if n in names]
    out = Path(args.out)
    md = out.with_suffix(".md")
    meta = report.machine_info()
    meta.update(command="python -m jad.benchmark all " + " ".join(argv), size=args.size, runs=[])
    rows: list[report.Row] = []
    if args.update and out.is_file():  # earlier runs of the benchmarks not rerun now
        old_rows, old_meta = report.read_json(out)
        rows = [r for r in old_rows if r.benchmark not in names]
        kept = [r for r in old_meta.get("runs", []) if r.get("name") not in names]
        for r in kept:
            r["from_earlier_run"] = old_meta.get("date", "")
        meta["runs"] = kept
        meta["command"] += f"  (updating {out}; other rows from {old_meta.get('command', '?')})"
    t_all = time.perf_counter()
    for name in names:
        run, new_rows = run_one(name, PRESETS[args.size][name])
        meta["runs"].append(run)
        rows += new_rows
        meta["total_s"] = round(time.perf_counter() - t_all, 2)
        later = report.machine_info()  # jax is imported by now: backend and devices
        for k in ("jax_backend", "devices", "jad_cpu_compiler_options"):
            if k in later:
                meta[k] = later[k]
        meta["loadavg_end"] = later.get("loadavg")
        report.write_json(out, rows, meta)
        report.write_markdown(md, rows, meta)
    failed = [r["name"] for r in meta["runs"] if r["status"] not in ("ok", "skipped")]
    print(
        f"\n{len(rows)} rows from {len(names)} benchmark(s) in {meta['total_s']:.0f} s -> {out}, {md}"
        + (f"; FAILED: {', '.join(failed)}" if failed else ""),
        flush=True,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
