"""Frozen-backbone features of the training images, computed once and reused every epoch.

A trainer with a frozen extractor (``embed``) trains on its features; with PBAS's fixed
preprocessing (no augmentation) they are the same every epoch, so the cache is exact. Features
are computed in the loader's fixed order with one compiled batch shape (progress bar), then kept

- in memory when they fit ``budget_gb`` (default sized for a 24 GiB machine), or
- on disk under ``<workdir>/<category>/feature_cache/<key>.npy``, memory-mapped read-only.

The key is a hash of everything that determines the features: the backbone weights (sha256 or
the random-init seed), the extractor's settings, the preprocessing, the extraction batch size and
the list of training files (path, size, mtime). A disk cache is written to a temporary file and
renamed into place when complete, so a run killed while extracting recomputes it; a complete one
is reused by a resumed run. Older cache files of the same folder are deleted after a new one is
complete.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from jad.utils.atomic import write_json
from jad.utils.progress import Progress


def cache_key(parts: dict[str, Any]) -> str:
    """sha256 (hex, 24 chars) of a JSON-able description of the features."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def cache_location(key_parts: dict[str, Any], workdir) -> tuple[str, Path | None]:
    """(key, folder) of the features described by ``key_parts`` for the fit in ``workdir``:
    the hash of ``key_parts`` (one per process in a multi-host run: each host caches its own
    block of the images) and ``<workdir>/feature_cache`` (None without a workdir)."""
    import jax

    key = cache_key(key_parts)
    if jax.process_count() > 1:
        key = f"{key}-p{jax.process_index()}of{jax.process_count()}"
    return key, None if workdir is None else Path(workdir) / "feature_cache"


def files_fingerprint(paths: Iterable[str]) -> list[list[Any]]:
    """[path, size, mtime_ns] of every file (a changed image changes the key)."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append([str(p), st.st_size, st.st_mtime_ns])
    return out


def compute_features(
    batches: Iterable[dict[str, np.ndarray]],
    embed: Callable[[np.ndarray], Any],
    *,
    num_examples: int,
    num_batches: int,
    key: str,
    folder: Path | None,
    budget_gb: float,
    progress: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Features [num_examples, ...] float32 (in memory or a read-only memmap) and cache facts.

    ``batches`` yields dicts with ``image`` in the fixed training order; ``embed`` maps a batch of
    images to features [B, ...].
    """
    if not budget_gb >= 0:
        from jad.utils.errors import UserError

        raise UserError(
            f"feature_cache_gb={budget_gb!r} must be >= 0 (GiB of features kept in memory)"
        )
    info: dict[str, Any] = {"key": key}
    if folder is not None:
        for stale in Path(folder).glob(".*.npy.tmp-*"):  # left by a run killed while extracting
            stale.unlink(missing_ok=True)
        path = Path(folder) / f"{key}.npy"
        if path.is_file():
            feats = np.load(path, mmap_mode="r")
            meta_path = path.with_suffix(".json")
            if feats.shape[0] == num_examples and meta_path.is_file():
                valid = np.asarray(json.loads(meta_path.read_text()).get("valid", []), bool)
                if len(valid) != num_examples:
                    valid = np.ones(num_examples, bool)
                info.update(where="disk (reused)", path=str(path), gb=feats.nbytes / 2**30)
                return feats, info | {"valid": valid}
    out: np.ndarray | None = None
    tmp_path = None
    i = 0
    valid: list[np.ndarray] = []
    with Progress("features", num_batches, unit="batch", enabled=progress) as bar:
        for batch in batches:
            f = np.asarray(embed(batch["image"]), np.float32)
            valid.append(np.asarray(batch.get("valid", np.ones(len(f), bool)), bool))
            if out is None:
                shape = (num_examples, *f.shape[1:])
                nbytes = int(np.prod(shape)) * 4
                if folder is None or nbytes <= budget_gb * 2**30:
                    out = np.empty(shape, np.float32)
                    info.update(where="memory", gb=nbytes / 2**30)
                else:
                    Path(folder).mkdir(parents=True, exist_ok=True)
                    tmp_path = Path(folder) / f".{key}.npy.tmp-{os.getpid()}"
                    out = np.lib.format.open_memmap(
                        tmp_path, mode="w+", dtype=np.float32, shape=shape
                    )
                    info.update(where="disk", gb=nbytes / 2**30)
            out[i : i + len(f)] = f
            i += len(f)
            bar.update(1)
    if out is None or i != num_examples:
        raise AssertionError(f"feature extraction saw {i} of {num_examples} training images")
    info["valid"] = np.concatenate(valid)
    if tmp_path is not None:
        out.flush()
        del out
        final = Path(folder) / f"{key}.npy"
        os.replace(tmp_path, final)
        meta = {k: v for k, v in info.items() if k != "valid"}
        meta |= {"num_examples": num_examples, "valid": info["valid"].tolist()}
        write_json(Path(folder) / f"{key}.json", meta)
        for old in Path(folder).glob("*.npy"):
            if old != final:
                old.unlink(missing_ok=True)
                old.with_suffix(".json").unlink(missing_ok=True)
        info["path"] = str(final)
        return np.load(final, mmap_mode="r"), info
    return out, info
