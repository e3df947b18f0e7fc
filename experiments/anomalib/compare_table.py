"""Side-by-side table of PatchCore fit/test timings: jad vs anomalib (and optionally the official code).

Reads the JSON written by ``run_anomalib_patchcore.py`` (``categories.<cat>.timings``), jad's
``<workdir>/results.json`` (``timings.<cat>``) and, optionally, the JSON of
``run_official_patchcore.py``; prints a markdown table. Every ratio is
*peer time / jad time* (for throughput: time per image), so ``> 1`` means jad is faster.

Usage::

    python experiments/anomalib/compare_table.py --anomalib A.json --jad W/results.json \
        [--official O.json] [--label small] [--out table.md]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

# (row label, key in the per-category timings, kind) ; kind "s" = seconds, "ips" = images/s
ROWS = (
    ("features (s)", "features_wall_s", "s"),
    ("coreset (s)", "coreset_s", "s"),
    ("fit total (s)", "fit_s", "s"),
    ("test (img/s)", "test_images_per_s", "ips"),
)


class TableError(ValueError):
    """A results file is missing or does not have the expected layout."""


def _read(path: Path, what: str) -> dict[str, Any]:
    if not Path(path).is_file():
        raise TableError(f"{what} results {path} do not exist; run that side first.")
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise TableError(f"{what} results {path} are not valid JSON ({e}).") from e


def jad_timings(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per-category timings from jad's ``results.json``.

    jad's ``features_s`` already includes reading the images (its loop loads and embeds), so it
    is used as ``features_wall_s`` too.
    """
    t = results.get("timings")
    if not isinstance(t, dict):
        raise TableError("jad results.json has no 'timings' object; is it from `jad.train`?")
    out = {}
    for cat, v in t.items():
        if isinstance(v, dict) and "fit_s" in v:
            out[cat] = dict(v) | {"features_wall_s": float(v["features_s"])}
    if not out:
        raise TableError("jad results.json has no per-category fit timings.")
    return out


def peer_timings(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per-category timings from ``run_anomalib_patchcore.py`` / ``run_official_patchcore.py``."""
    cats = results.get("categories")
    if not isinstance(cats, dict) or not cats:
        raise TableError("peer results have no 'categories' object; wrong file?")
    out = {}
    for cat, v in cats.items():
        t = dict(v["timings"])
        t.setdefault("features_wall_s", t["fit_s"] - t["coreset_s"])
        out[cat] = t
    return out


def _fmt(x: float | None, kind: str) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if kind == "ips":
        return f"{x:.2f}"
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def ratio(peer: float | None, jad: float | None, kind: str) -> float | None:
    """Peer time / jad time (> 1: jad faster). For images/s that is jad_ips / peer_ips."""
    if peer is None or jad is None or peer <= 0 or jad <= 0:
        return None
    return jad / peer if kind == "ips" else peer / jad


def build_table(
    jad: dict[str, dict[str, float]],
    peers: dict[str, dict[str, dict[str, float]]],
    label: str = "",
) -> str:
    """Markdown table: one block of rows per category present in jad and every peer."""
    names = list(peers)
    head = ["category", "quantity", "jad"] + names + [f"{n}/jad" for n in names]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    common = [c for c in jad if all(c in p for p in peers.values())]
    for cat in common:
        for row, key, kind in ROWS:
            j = jad[cat].get(key)
            vals = [peers[n][cat].get(key) for n in names]
            rats = [ratio(v, j, kind) for v in vals]
            cells = [f"{label}{cat}" if label else cat, row, _fmt(j, kind)]
            cells += [_fmt(v, kind) for v in vals]
            cells += ["-" if r is None else f"{r:.1f}x" for r in rats]
            lines.append("| " + " | ".join(cells) + " |")
    everywhere = set(jad).union(*[set(p) for p in peers.values()])
    missing = sorted(everywhere - set(common))
    if missing:
        lines.append(f"\n(categories not in every file, left out: {', '.join(missing)})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jad", required=True, type=Path, help="jad <workdir>/results.json")
    p.add_argument("--anomalib", type=Path, help="run_anomalib_patchcore.py JSON")
    p.add_argument("--official", type=Path, help="run_official_patchcore.py JSON")
    p.add_argument("--label", default="", help="prefix for the category cells, e.g. 'large/'")
    p.add_argument("--out", type=Path, help="also write the table here")
    args = p.parse_args(argv)
    try:
        jad = jad_timings(_read(args.jad, "jad"))
        peers = {}
        if args.anomalib:
            peers["anomalib"] = peer_timings(_read(args.anomalib, "anomalib"))
        if args.official:
            peers["official"] = peer_timings(_read(args.official, "official"))
        if not peers:
            raise TableError("give --anomalib and/or --official results to compare with.")
    except TableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table = build_table(jad, peers, args.label)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
