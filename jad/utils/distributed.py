"""Multi-host runs on JAX's own distributed runtime (``jax.distributed``).

Every CLI accepts ``--coordinator_address=host:port --num_processes=N --process_id=i`` (or the
environment variables ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``);
with more than one process it calls :func:`initialize` before any other JAX work. Then:

- each host reads only its contiguous block of the training / test images (``jad.data`` loaders
  with ``num_shards = process_count``; blocks padded to equal size, padding flagged ``valid``
  and dropped before any metric);
- a fit sees the features of all hosts as one global array over all devices of all hosts
  (:func:`global_rows`), so the PatchCore coreset runs over the whole bank, and a trainer's loop
  runs the same steps on every host with the global batch sharded over all devices (gradients
  all-reduced across hosts by the compiler);
- checkpoints go through Orbax's multi-host saving; JSON results, metrics tables and images are
  written by process 0 only (:func:`is_primary`).

Failure: the coordination service declares a process dead after ``HEARTBEAT_S`` seconds without a
heartbeat and terminates the others with "another task died" (measured: ~9 s with a 10 s timeout),
so a run never hangs on a dead peer. On CPU the collectives are gloo's.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

HEARTBEAT_S = 20
INIT_TIMEOUT_S = 120
ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
_STATE = {"initialized": False}


def settings(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> tuple[str | None, int, int]:
    """The (address, number, id) from the flags, else from the environment; (None, 1, 0) = one."""
    address = coordinator_address or os.environ.get(ENV[0]) or None
    n = num_processes if num_processes is not None else int(os.environ.get(ENV[1], "1") or 1)
    i = process_id if process_id is not None else int(os.environ.get(ENV[2], "0") or 0)
    return address, int(n), int(i)


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    heartbeat_timeout_s: int = HEARTBEAT_S,
) -> bool:
    """Joins the multi-process run if more than one process is configured; returns whether it did.

    Raises:
      UserError: an incomplete or inconsistent setting (one line).
    """
    from jad.utils.errors import UserError

    address, n, i = settings(coordinator_address, num_processes, process_id)
    if n <= 1:
        return False
    if not address:
        raise UserError(
            f"num_processes={n} needs --coordinator_address=host:port (or {ENV[0]}) on every process"
        )
    if not 0 <= i < n:
        raise UserError(f"process_id={i} must be in [0, {n})")
    import jax

    if _STATE["initialized"]:
        return True
    if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS") == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=address,
        num_processes=n,
        process_id=i,
        initialization_timeout=INIT_TIMEOUT_S,
        heartbeat_timeout_seconds=heartbeat_timeout_s,
    )
    _STATE["initialized"] = True
    return True


def joined() -> bool:
    """Whether this process joined a multi-process run (``initialize`` returned True)."""
    return bool(_STATE["initialized"])


def exit_now(code: int) -> None:
    """Leave a multi-process run at once: flush, then ``os._exit`` (no shutdown barrier).

    A failing process that exits normally waits at JAX's shutdown barrier (and for its background
    checkpoint saves) while its peers wait in their next collective, and the run hangs for the
    barrier's minutes. Exiting at once drops this task instead: the peers' next collective fails
    or the coordination service reports it dead within ``HEARTBEAT_S`` s, and they stop too. An
    unfinished Orbax save is never committed, so no checkpoint is left half-written.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(code))


def lost_peer(error: BaseException) -> bool:
    """Whether an exception is a collective failing because another process is gone."""
    text = f"{type(error).__name__}: {error}"
    return any(
        s in text
        for s in (
            "Gloo",
            "Connection closed by peer",
            "another task died",
            "unhealthy",
            "DEADLINE_EXCEEDED",
            "UNAVAILABLE",
        )
    )


def process_count() -> int:
    import jax

    return jax.process_count()


def is_primary() -> bool:
    """True on the process that writes files (process 0; always on a single host)."""
    import jax

    return jax.process_index() == 0


def gather_rows(local: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """The rows of every host, concatenated in process order, padding (``valid`` False) removed.

    Each host passes its block (the same shape everywhere, as the loaders' equal-size shards give);
    on a single process this returns ``local[valid]``.
    """
    v = np.ones(len(local), bool) if valid is None else np.asarray(valid, bool)
    if process_count() == 1:
        return local if v.all() else np.asarray(local)[v]  # no copy (memory-mapped caches)
    local = np.asarray(local)
    from jax.experimental import multihost_utils

    rows = np.asarray(multihost_utils.process_allgather(local, tiled=True))
    keep = np.asarray(multihost_utils.process_allgather(v, tiled=True))
    return rows[keep]


def global_rows(x: np.ndarray, mesh: Any, *, pad: bool = False) -> Any:
    """A host array that is identical on every process -> a global jax.Array split by rows over
    ``mesh``'s ``data`` axis (each process supplies its addressable rows).

    ``pad``: append zero rows up to a multiple of the device count (a multi-process global array
    needs equal shards; e.g. 784 patches per image over 3 or 6 devices); the caller knows how
    many rows are real. Without it the row count must divide the device count there."""
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    x = np.asarray(x)
    sharding = NamedSharding(mesh, P("data"))
    if process_count() == 1:
        return jax.device_put(x, sharding)
    n, size = x.shape[0], int(mesh.devices.size)
    if not pad or n % size == 0:
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
    padded = -(-n // size) * size

    def block(idx):
        rows = idx[0]
        start, stop = rows.start or 0, padded if rows.stop is None else rows.stop
        out = np.zeros((stop - start, *x.shape[1:]), x.dtype)
        if start < n:
            out[: min(stop, n) - start] = x[start : min(stop, n)]
        return out

    return jax.make_array_from_callback((padded, *x.shape[1:]), sharding, block)


def replicate(tree: Any, sharding: Any, *, copy: bool = False) -> Any:
    """Host values identical on every process -> global arrays with ``sharding`` (any layout).

    ``copy``: never alias the input's buffers (a state about to be donated to a step must not
    share buffers with arrays its owner keeps, e.g. a cached backbone).
    """
    import jax

    if process_count() == 1:
        return jax.device_put(tree, sharding, may_alias=False if copy else None)

    def put(x, sh):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sh, lambda idx: x[idx])

    if isinstance(sharding, jax.sharding.Sharding):
        return jax.tree.map(lambda x: put(x, sharding), tree)
    return jax.tree.map(put, tree, sharding)


def to_host(tree: Any) -> Any:
    """numpy copies of (replicated or fully addressable) jax arrays, on any number of processes."""
    import jax

    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if x.sharding.is_fully_replicated:
                return np.asarray(x.addressable_data(0))
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(jax.device_get(x))

    return jax.tree.map(get, tree)
