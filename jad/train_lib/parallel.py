"""Data-parallel steps: one way to shard a batch, two ways to run the same pure ``train_step``.

- ``mode="jit"`` (the engine): ``jax.jit`` with the state replicated and the batch sharded over a
  1-D ``data`` mesh axis (``NamedSharding``); the step is written for the global batch and XLA
  inserts the collectives (gradient sums, BatchNorm moments over the global batch).
- ``mode="pmap"`` (the pmap-style entry users asked for): the same ``train_step`` under
  ``jax.pmap(..., axis_name="data")`` with the batch split [devices, per-device, ...] and the
  state unmapped (``in_axes=None``, ``out_axes=None``); the step's batch reductions go through
  :mod:`jad.ops.reduce`, which ``psum``-s them over the axis, so it computes the same function.

Uneven batches are padded, never run at a different shape: every batch is padded to the fixed
global batch size (a multiple of the device count) and carries ``mask`` [B] (1 = real example),
which every reduction in a train step honours (pad rows never reach BatchNorm statistics, means
or gradients). One compiled step serves the whole run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jad.utils import distributed
from jad.utils.errors import UserError

AXIS = "data"
MODES = ("jit", "pmap")


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh with axis ``data`` over ``devices`` (default: all)."""
    return Mesh(np.array(devices if devices is not None else jax.devices()), (AXIS,))


def padded_batch_size(batch_size: int, num_devices: int) -> int:
    """The global batch shape: ``batch_size`` rounded up to a multiple of the device count."""
    return -(-int(batch_size) // num_devices) * num_devices


def pad_to(batch: dict[str, Any], size: int) -> dict[str, Any]:
    """Pads every array of ``batch`` along axis 0 to ``size`` rows and sets ``mask`` [size].

    Pad rows repeat row 0 (finite values, never NaN-producing) and get mask 0; a ``mask`` already
    in ``batch`` is kept for the real rows.
    """
    n = len(next(iter(batch.values())))
    if n > size:
        raise AssertionError(f"batch of {n} examples does not fit the batch shape {size}")
    out = {}
    for k, v in batch.items():
        if k == "mask":
            continue
        v = np.asarray(v)
        if n < size:
            v = np.concatenate([v, np.repeat(v[:1], size - n, axis=0)], axis=0)
        out[k] = v
    mask = np.zeros((size,), np.float32)
    mask[:n] = np.asarray(batch.get("mask", 1.0), np.float32)
    out["mask"] = mask
    return out


class DataParallel:
    """Runs ``step(state, batch, axis_name=None) -> (state, metrics)`` over a mesh.

    ``put_state`` moves the state to its placement; ``__call__`` takes a host batch (padded with
    :func:`pad_to`) and returns the new device state and metrics.

    ``state_specs`` (jit only): a pytree of ``PartitionSpec`` matching the state, for state that
    does not fit one device (e.g. ProxyCore's proxy matrix and its optimiser moments split over
    ``data``); default: everything replicated.
    """

    def __init__(
        self,
        step: Callable[..., tuple[Any, dict]],
        *,
        mesh: Mesh | None = None,
        mode: str = "jit",
        donate: bool = True,
        state_specs: Any = None,
    ):
        if mode not in MODES:
            raise UserError(f"train.parallel={mode!r} is unknown; use one of {', '.join(MODES)}")
        self.mesh = mesh if mesh is not None else data_mesh()
        self.mode = mode
        self.num_devices = int(self.mesh.devices.size)
        self.replicated = NamedSharding(self.mesh, P())
        self.sharded = NamedSharding(self.mesh, P(AXIS))
        if state_specs is not None and mode != "jit":
            raise UserError("a sharded train state needs train.parallel=jit (pmap replicates it)")
        self.state_sharding = (
            self.replicated
            if state_specs is None
            else jax.tree.map(
                lambda spec: NamedSharding(self.mesh, spec),
                state_specs,
                is_leaf=lambda x: isinstance(x, P),
            )
        )
        if mode == "jit":
            self._fn = jax.jit(
                lambda s, b: step(s, b, axis_name=None),
                in_shardings=(self.state_sharding, self.sharded),
                out_shardings=(self.state_sharding, self.replicated),
                donate_argnums=(0,) if donate else (),
            )
        else:
            self._fn = jax.pmap(
                lambda s, b: step(s, b, axis_name=AXIS),
                axis_name=AXIS,
                in_axes=(None, 0),
                out_axes=None,
                devices=list(self.mesh.devices.flat),
            )

    def put_state(self, state: Any) -> Any:
        """The state at its placement (global arrays over every host's devices in a multi-host
        run; every process passes the same values). Always new buffers: the step donates them,
        and the caller's arrays (a trainer's cached backbone in its state) must stay valid."""
        if self.mode != "jit":
            return state
        return distributed.replicate(state, self.state_sharding, copy=True)

    def abstract_state(self, abstract: Any) -> Any:
        """``jax.eval_shape`` output with the state's shardings attached (a restore target)."""
        if isinstance(self.state_sharding, NamedSharding):
            return jax.tree.map(
                lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self.state_sharding),
                abstract,
            )
        return jax.tree.map(
            lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
            abstract,
            self.state_sharding,
        )

    def put_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        n = len(batch["mask"])
        if n % self.num_devices:
            raise AssertionError(
                f"batch of {n} rows is not a multiple of {self.num_devices} devices"
            )
        if self.mode == "jit":
            return {k: distributed.global_rows(v, self.mesh) for k, v in batch.items()}
        d = self.num_devices
        return {k: np.asarray(v).reshape(d, n // d, *np.shape(v)[1:]) for k, v in batch.items()}

    def __call__(self, state: Any, batch: dict[str, Any]) -> tuple[Any, dict]:
        return self._fn(state, self.put_batch(batch))
