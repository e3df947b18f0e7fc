"""Atomic writes: a file or folder is either the complete new version or the old one, never half.

Every writer in jad goes through here (results/metrics JSON and CSV, heatmap PNGs, converted
weights, the synthetic dataset, prepared TFDS copies):

- :func:`atomic_file` writes into a temporary file in the target's folder, flushes and fsyncs it,
  then ``os.replace``-s it over the target. On any error (or KeyboardInterrupt) the temporary file
  is removed and the target is left exactly as it was.
- :func:`atomic_dir` builds a folder under a temporary sibling name and renames it into place; an
  existing folder is swapped out and deleted only once the new one is in place, and restored if
  the swap fails. On any error the temporary folder is removed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """``with atomic_file(p, "wb") as f: ...`` writes ``p`` atomically (see module docstring)."""
    if not any(c in mode for c in "wx") or "+" in mode:
        raise ValueError(f"atomic_file writes a new file; mode must be 'w' or 'wb', got {mode!r}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode.replace("x", "w"), **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 -> what open() would have given
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomic UTF-8 text write (``\\n`` line ends kept as given)."""
    with atomic_file(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_file(path, "wb") as f:
        f.write(data)
    return Path(path)


def _json_default(o: Any) -> Any:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        np = None
    if np is not None and isinstance(o, np.generic):
        return o.item()
    if np is not None and isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (Path, os.PathLike)):
        return os.fspath(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def _find_non_finite(obj: Any, where: str = "") -> str | None:
    if isinstance(obj, float) and not math.isfinite(obj):
        return where or "<root>"
    if isinstance(obj, dict):
        for k, v in obj.items():
            hit = _find_non_finite(v, f"{where}.{k}" if where else str(k))
            if hit:
                return hit
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            hit = _find_non_finite(v, f"{where}[{i}]")
            if hit:
                return hit
    return None


def dumps_json(obj: Any) -> str:
    """Strict JSON text: numpy scalars/arrays converted, NaN/Inf refused (JSON has neither)."""
    try:
        return json.dumps(obj, indent=2, allow_nan=False, default=_json_default) + "\n"
    except ValueError as e:
        # re-run through the converter to name the key holding the non-finite value
        plain = json.loads(json.dumps(obj, default=_json_default))
        where = _find_non_finite(plain)
        raise ValueError(f"refusing to write a non-finite number at {where} as JSON") from e


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomic strict JSON write (see :func:`dumps_json`). Nothing is written when it fails."""
    return write_text(path, dumps_json(obj))


@contextlib.contextmanager
def atomic_dir(
    final: str | os.PathLike,
    *,
    keep_existing: Callable[[Path], bool] | None = None,
) -> Iterator[Path]:
    """``with atomic_dir(out) as tmp: <write into tmp>`` -> ``tmp`` becomes ``out``.

    Args:
      final: the folder to create or replace.
      keep_existing: called with ``final`` when it appeared while ``tmp`` was being built (another
        process finished first); if it returns True that folder is kept and ``tmp`` dropped,
        otherwise the new folder replaces it.
    """
    final = Path(final).expanduser().absolute()
    final.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = final.parent / f".{final.name}.tmp-{tag}"
    old = final.parent / f".{final.name}.old-{tag}"
    existed = final.exists()
    tmp.mkdir()
    try:
        yield tmp
        if not existed and final.exists() and keep_existing is not None and keep_existing(final):
            return  # lost a race against an identical writer; theirs is complete
        if final.exists():
            os.rename(final, old)
        try:
            os.rename(tmp, final)
        except BaseException:
            if old.exists() and not final.exists():
                os.rename(old, final)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
