"""jad's data cache root, the one place that reads ``$JAD_DATA_DIR``."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "JAD_DATA_DIR"


def cache_dir() -> Path:
    """``$JAD_DATA_DIR`` if set and non-empty, else ``~/.cache/jad``.

    It holds ``tfds/`` (prepared copies of datasets, :mod:`jad.data.builders`) and
    ``synthetic/seed<N>`` / ``synthetic/hard-seed<N>`` (generated synthetic sets).
    """
    return Path(os.environ.get(ENV_VAR) or "~/.cache/jad").expanduser()
