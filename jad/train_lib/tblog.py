"""TensorBoard event files without TensorFlow (tensorboardX), or nothing when disabled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class MetricWriter:
    """``scalars(step, {name: value})`` and ``image(step, name, hwc_uint8)`` under ``logdir``."""

    def __init__(self, logdir: Path | None):
        self._w = None
        if logdir is not None:
            from tensorboardX import SummaryWriter

            self._w = SummaryWriter(logdir=str(logdir), flush_secs=30)

    @property
    def enabled(self) -> bool:
        return self._w is not None

    def scalars(self, step: int, values: dict[str, Any]) -> None:
        if self._w is None:
            return
        for k, v in values.items():
            if v is not None:
                self._w.add_scalar(k, float(v), int(step))

    def image(self, step: int, name: str, image: np.ndarray) -> None:
        if self._w is not None:
            self._w.add_image(name, np.asarray(image), int(step), dataformats="HWC")

    def flush(self) -> None:
        if self._w is not None:
            self._w.flush()

    def close(self) -> None:
        if self._w is not None:
            self._w.close()
            self._w = None
