"""The method protocol: what ``jad.train``, ``jad.evaluate`` and ``jad.predict`` need from a method.

Every method (PatchCore, PBAS, ProxyCore, APC) is a small object built from its config that

- ``fit(train, *, key, ctx) -> FitResult``: turns the normal training images of one category into a
  state pytree (PatchCore: the memory bank; trainers: trained parameters). Trainers may use
  ``ctx.workdir`` for intermediate checkpoints so a run can resume.
- ``predict(state, images) -> Predictions``: scores a batch of preprocessed images
  (float32 NHWC, ImageNet-normalised) with image scores and full-resolution anomaly maps.

States are dicts of numpy/jax arrays (saved with Orbax); everything else a method needs to rebuild
itself is in its config, which is saved beside the state. Nothing here knows about paths or
datasets: the entry points feed batches from ``jad.data``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import jax
import numpy as np

State = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Predictions:
    """``image_scores`` float32 [B] (higher = more anomalous); ``anomaly_maps`` float32 [B, H, W]."""

    image_scores: np.ndarray
    anomaly_maps: np.ndarray


@dataclasses.dataclass
class FitResult:
    """A fitted state plus facts worth recording (timings in seconds, sizes)."""

    state: State
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class FitContext:
    """Where a method may keep intermediate files and whether to show progress."""

    workdir: Path | None = None
    progress: bool = True


@runtime_checkable
class Method(Protocol):
    name: str

    def fit(
        self, train: Iterable[Mapping[str, np.ndarray]], *, key: jax.Array, ctx: FitContext
    ) -> FitResult: ...

    def predict(self, state: State, images: np.ndarray) -> Predictions: ...


# name -> "module:factory"; a factory takes the full config and returns a Method.
_REGISTRY = {
    "patchcore": "jad.methods.patchcore:from_config",
}


def available_methods() -> list[str]:
    return sorted(_REGISTRY)


def build_method(config) -> Method:
    """Build the method named by ``config.method`` from the full run config."""
    from jad.utils.errors import UserError

    name = str(config.method)
    if name not in _REGISTRY:
        raise UserError(
            f"unknown method '{name}' in config; available: {', '.join(available_methods())}"
        )
    module_name, factory = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module_name), factory)(config)
