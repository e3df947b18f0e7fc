"""Structured benchmark results: rows of (benchmark, case, jad time, peer, peer time), shared by
every ``python -m jad.benchmark`` command, written as JSON and as a Markdown table.

A benchmark calls :func:`record` where it prints a jad-vs-peer figure (one row per peer); the
rows collect in this module's list until :func:`take` hands them over (``python -m jad.benchmark
all`` does, after each sub-benchmark). Times are seconds, lower is better; ``ratio`` is
peer / jad (> 1: jad faster). A peer that is not installed is a row with ``peer = None``,
``peer_s = None`` and a note saying which package is missing.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import sys
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA = 1
PACKAGES = ("jax", "jaxlib", "flax", "numpy", "torch", "faiss-cpu", "scikit-learn", "scipy")


@dataclasses.dataclass(frozen=True)
class Row:
    """One measured case. ``jad_s`` / ``peer_s``: seconds (None: not measured)."""

    benchmark: str
    case: str
    jad_s: float | None
    peer: str | None = None
    peer_s: float | None = None
    unit: str = "s"
    notes: str = ""

    @property
    def ratio(self) -> float | None:
        """peer_s / jad_s (> 1: jad faster); None when either side is missing."""
        if self.jad_s is None or self.peer_s is None or self.jad_s <= 0:
            return None
        return self.peer_s / self.jad_s

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ratio": self.ratio}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Row:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in fields})


_ROWS: list[Row] = []


def record(
    benchmark: str,
    case: str,
    jad_s: float | None,
    peer: str | None = None,
    peer_s: float | None = None,
    *,
    unit: str = "s",
    notes: str = "",
) -> Row:
    """Appends one row to the collector and returns it. ``peer_s`` None means no peer time."""
    if peer_s is None and peer is not None:
        peer, notes = None, _join(f"peer {peer} not measured", notes)
    row = Row(
        benchmark,
        case,
        None if jad_s is None else float(jad_s),
        peer,
        None if peer_s is None else float(peer_s),
        unit,
        notes,
    )
    _ROWS.append(row)
    return row


def record_missing(benchmark: str, case: str, jad_s: float | None, package: str, notes: str = ""):
    """A row whose peer could not run because ``package`` is not installed (peer = None)."""
    return record(benchmark, case, jad_s, notes=_join(f"peer {package} not installed", notes))


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def rows() -> list[Row]:
    """The rows recorded so far (a copy)."""
    return list(_ROWS)


def take() -> list[Row]:
    """The rows recorded so far; empties the collector."""
    out = list(_ROWS)
    _ROWS.clear()
    return out


# ---------------------------------------------------------------------------------------------
# Machine description
# ---------------------------------------------------------------------------------------------


# CPU features that decide which kernels XLA, oneDNN and faiss pick.
ISA = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "asimd")


def _cpuinfo(field: str) -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.split(":", 1)[0].strip() == field:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def _cpu_isa() -> list[str]:
    flags = set((_cpuinfo("flags") or _cpuinfo("Features") or "").split())
    return [f for f in ISA if f in flags]


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU model, core counts, package versions, XLA/JAX flags, date (UTC) and load average."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_isa": _cpu_isa(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in PACKAGES},
        "env": {k: os.environ[k] for k in sorted(os.environ) if k.startswith(("XLA_", "JAX_"))},
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    if hasattr(os, "getloadavg"):
        info["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    if "jax" in sys.modules:  # do not initialise a backend just to describe it
        import jax

        info["jax_backend"] = jax.default_backend()
        info["devices"] = [d.device_kind for d in jax.devices()]
    features = sys.modules.get("jad.models.features")
    if features is not None:  # the XLA options jad compiles its CPU feature functions with
        info["jad_cpu_compiler_options"] = dict(features.CPU_COMPILER_OPTIONS)
    return info


# ---------------------------------------------------------------------------------------------
# JSON and Markdown
# ---------------------------------------------------------------------------------------------


def write_json(
    path: str | os.PathLike, rows: Sequence[Row], meta: dict[str, Any] | None = None
) -> Path:
    """Writes ``{"schema", "meta", "rows"}`` to ``path`` (atomically) and returns the path."""
    path = Path(path)
    doc = {"schema": SCHEMA, "meta": meta or {}, "rows": [r.to_json() for r in rows]}
    write_text_atomic(path, json.dumps(doc, indent=1, sort_keys=False) + "\n")
    return path


def read_json(path: str | os.PathLike) -> tuple[list[Row], dict[str, Any]]:
    """(rows, meta) of a file written by :func:`write_json`."""
    doc = json.loads(Path(path).read_text())
    if not isinstance(doc, dict) or "rows" not in doc:
        raise ValueError(f"{path} is not a jad benchmark file (no 'rows' key).")
    return [Row.from_json(r) for r in doc["rows"]], doc.get("meta", {})


def fmt_seconds(t: float | None) -> str:
    """'1.23 s', '45.6 ms', '789 µs'; an em dash for None."""
    if t is None:
        return "—"
    if t >= 100:
        return f"{t:.0f} s"
    if t >= 1:
        return f"{t:.2f} s"
    if t >= 1e-3:
        return f"{t * 1e3:.1f} ms"
    return f"{t * 1e6:.0f} µs"


def _cell(s: object) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Iterable[Row]) -> str:
    """A Markdown table: benchmark, case, jad, peer, peer time, ratio peer/jad, notes."""
    lines = [
        "| benchmark | case | jad | peer | peer time | peer/jad | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = "—" if r.ratio is None else f"x{r.ratio:.2f}"
        unit = "" if r.unit == "s" else f" ({r.unit})"
        lines.append(
            "| "
            + " | ".join(
                _cell(c)
                for c in (
                    r.benchmark,
                    r.case + unit,
                    fmt_seconds(r.jad_s),
                    r.peer or "—",
                    fmt_seconds(r.peer_s),
                    ratio,
                    r.notes,
                )
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def describe_machine(meta: dict[str, Any]) -> str:
    """One line: CPU, cores, versions, flags, date, load."""
    v = meta.get("versions", {})
    isa = set(meta.get("cpu_isa") or ())
    names = {"avx512f": "AVX-512", "avx2": "AVX2", "avx": "AVX", "asimd": "NEON"}
    best = next((names[f] for f in names if f in isa), None)
    cores = f"{meta.get('usable_cores', '?')} cores" + (f", {best}" if best else "")
    parts = [f"{meta.get('cpu', '?')} ({cores})"]
    pkgs = [f"{p} {v[p]}" for p in ("jax", "jaxlib", "torch", "faiss-cpu") if v.get(p)]
    if pkgs:
        parts.append(", ".join(pkgs))
    env = meta.get("env") or {}
    parts.append(", ".join(f"{k}={val}" for k, val in env.items()) if env else "no XLA/JAX flags")
    if meta.get("date"):
        parts.append(meta["date"])
    if meta.get("loadavg"):
        parts.append(f"load average at start {meta['loadavg'][0]}")
    return "; ".join(parts)


def markdown_report(rows: Sequence[Row], meta: dict[str, Any]) -> str:
    """The machine line, the command, the table, and the failures (if any)."""
    out = [f"Machine: {describe_machine(meta)}."]
    if meta.get("command"):
        out.append(
            f"Command: `{meta['command']}`"
            + (f" (size {meta['size']})." if meta.get("size") else ".")
        )
    out += ["", markdown_table(rows).rstrip("\n")]
    failed = [r for r in meta.get("runs", []) if r.get("status") != "ok"]
    for r in failed:
        out.append(f"\n**{r['name']} {r['status']}**: {_cell(r.get('error', ''))}")
    return "\n".join(out) + "\n"


def write_markdown(
    path: str | os.PathLike, rows: Sequence[Row], meta: dict[str, Any] | None = None
) -> Path:
    """Writes :func:`markdown_report` to ``path`` (atomically) and returns the path."""
    path = Path(path)
    write_text_atomic(path, markdown_report(rows, meta or {}))
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` to a temporary file next to ``path``, then renames it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
