"""The method protocols: what ``jad.train``, ``jad.evaluate`` and ``jad.predict`` need from a method.

Two kinds of methods, one loop (``jad.train_lib``) and one runner for both:

- **Fit methods** (PatchCore): ``fit(train, *, key, ctx) -> FitResult`` turns the normal
  training images of one category into a state (the memory bank) in one call.
- **Trainers** (PBAS, ProxyCore, APC) supply pure pieces; ``jad.train_lib.loop`` owns the loop,
  the data order, multi-device sharding, checkpoints, exact resume, logging and model selection:

  ``embed(images) -> features``        optional: a frozen feature extractor; the loop caches its
                                       output per training image and batches carry ``features``.
  ``init(key, sample_batch) -> TrainState``
                                       parameters, optimiser states and method extras with their
                                       final shapes. Pure: ``jax.eval_shape`` of it is the target
                                       a checkpoint is restored into.
  ``examples(data) -> TrainData``      optional: turn the per-image data into training examples
                                       (ProxyCore trains on patches); default: one per image.
  ``init_from_data(state, data, order) -> TrainState``
                                       optional: data-dependent initialisation before step 0 (PBAS
                                       sample centres, visiting the data in the seeded ``order``).
                                       Not re-run on resume (its result is in the state).
  ``make_batch(data, positions, step) -> batch``
                                       optional: build a step's host batch (default: gather
                                       ``data.arrays`` rows, plus ``index``); the loop pads it.
  ``state_specs(abstract_state, num_devices) -> PartitionSpec tree``
                                       optional: shard state that does not fit one device.
  ``begin_category(category)``         optional: per-category settings (APC's augmentations).
  ``train_step(state, batch, axis_name=None) -> (state, metrics)``
                                       pure; jitted with the batch sharded over a ``data`` mesh
                                       axis, or pmapped when ``axis_name`` is given (every batch
                                       reduction then goes through ``jad.ops.reduce``).
  ``eval_loss(state, batch) -> scalar``
                                       optional: the normal-only validation criterion of
                                       ``train.select=val`` (lower is better).
  ``finalize(state, data) -> state``   optional: after the last step (e.g. a PatchCore bank).
  ``export(state) -> State``           the arrays ``predict`` needs (saved as the final model).
  ``predict(state, images) -> Predictions``

Both kinds share ``predict(state, images) -> Predictions`` on batches of preprocessed images
(float32 NHWC, ImageNet-normalised). States are pytrees of arrays saved with Orbax; everything
else a method needs to rebuild itself is in its config, saved beside the state. Nothing here
knows about paths or datasets: the entry points feed batches from ``jad.data``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import flax.struct
import jax
import numpy as np

State = dict[str, Any]
Batch = dict[str, Any]


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
    """What the runner hands a fit: where to keep files, progress, and (for the training loop)
    the test-set evaluator used only by the labelled ``train.select=test_official`` protocol."""

    workdir: Path | None = None
    progress: bool = True
    evaluate_test: Callable[[Any], dict[str, float | None]] | None = None
    dataset_id: str = ""
    anomalous: Any = None  # a loader of the train_anomalous split (data.labelled_anomalies > 0)
    category: str = ""


@flax.struct.dataclass
class TrainState:
    """One pytree for everything a trainer's step changes.

    step: int32 scalar (steps done); params / batch_stats: Flax collections; opt_state: optax
    state; rng: uint32[2] base key (per-step keys are ``fold_in(rng, step)``); extras: method
    arrays that are not optimised (PBAS sample centres).
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array
    extras: Any = None


@dataclasses.dataclass
class TrainData:
    """Per-example training arrays (leading axis = example; numpy or memory-mapped).

    ``arrays["features"]`` for a trainer with ``embed``, else ``arrays["image"]``; ``indices``
    maps example i to its position in the category's training list (held-out images removed).
    ``aux`` holds arrays that are not training examples: ``anomalous_image`` / ``anomalous_mask``
    (the labelled anomalies) for a trainer with ``uses_anomalies = True``.
    """

    arrays: dict[str, Any]
    indices: np.ndarray
    aux: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_examples(self) -> int:
        return len(self.indices)


@runtime_checkable
class Method(Protocol):
    name: str

    def fit(
        self, train: Iterable[Mapping[str, np.ndarray]], *, key: jax.Array, ctx: FitContext
    ) -> FitResult: ...

    def predict(self, state: State, images: np.ndarray) -> Predictions: ...


@runtime_checkable
class Trainer(Protocol):
    name: str
    batch_size: int

    def init(self, key: jax.Array, sample_batch: Batch) -> TrainState: ...

    def train_step(
        self, state: TrainState, batch: Batch, axis_name: str | None = None
    ) -> tuple[TrainState, dict[str, jax.Array]]: ...

    def export(self, state: TrainState) -> State: ...

    def predict(self, state: State, images: np.ndarray) -> Predictions: ...


def is_trainer(method: Any) -> bool:
    return isinstance(method, Trainer) and not isinstance(method, Method)


# ---------------------------------------------------------------------------------------------
# Shared by every method: the configured frozen backbone.
# ---------------------------------------------------------------------------------------------


def configured_backbone(config) -> tuple[Any, Any]:
    """(module, variables) for ``config.backbone``; replays the official load-time BN update if asked."""
    from jad.models import load_backbone
    from jad.models.pretrained import parse_dtype

    bb = config.backbone
    dtype = parse_dtype(bb.get("dtype", "float32"))
    module, variables = load_backbone(
        str(bb.weights), arch=str(bb.arch), seed=int(config.seed), dtype=dtype
    )
    if bb.get("replay_load_bn_update", False):
        from jad.models.features import replay_load_bn_update

        variables = replay_load_bn_update(
            module, variables, int(bb.replay_image_size or config.data.crop), tuple(bb.layers)[-1]
        )
    return module, variables


def pad_batch(images: np.ndarray, batch_size: int) -> tuple[np.ndarray, int]:
    """Zero-pads ``images`` [n, ...] to ``max(n, batch_size)`` rows (one compiled shape)."""
    n = images.shape[0]
    if n >= batch_size:
        return images, n
    pad = np.zeros((batch_size - n, *images.shape[1:]), images.dtype)
    return np.concatenate([images, pad], axis=0), n


# name -> "module:factory"; a factory takes the full config and returns a Method or a Trainer.
_REGISTRY = {
    "patchcore": "jad.methods.patchcore:from_config",
    "pbas": "jad.methods.pbas:from_config",
    "proxycore": "jad.methods.proxycore:from_config",
    "apc": "jad.methods.apc:from_config",
}


def available_methods() -> list[str]:
    return sorted(_REGISTRY)


def build_method(config) -> Method | Trainer:
    """Build the method named by ``config.method`` from the full run config."""
    from jad.utils.errors import UserError

    name = str(config.method)
    if name not in _REGISTRY:
        raise UserError(
            f"unknown method '{name}' in config; available: {', '.join(available_methods())}"
        )
    module_name, factory = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module_name), factory)(config)


PRECISIONS = {"highest": jax.lax.Precision.HIGHEST, "default": None}


def parse_precision(value: Any, key: str) -> Any:
    """``<key>`` = ``highest`` / ``default`` -> the heads' matmul precision (None = XLA's
    default); anything else is a one-line error naming ``key``."""
    from jad.utils.errors import UserError

    if str(value) not in PRECISIONS:
        raise UserError(f"{key}={value!r} is unknown; use one of {', '.join(PRECISIONS)}")
    return PRECISIONS[str(value)]
