"""Orbax checkpoints: ``<dir>/<step>/{state, meta}``, one mechanism for training runs and models.

:class:`Checkpoints` wraps one ``ocp.CheckpointManager`` for the life of a run: step-numbered
saves (``state`` = any pytree, ``meta`` = a JSON dict), keeping the latest ``keep`` and, when a
selection criterion is given, the best one too; restores go into a *target* structure (abstract
arrays with shardings), so optax states keep their types and a resumed run continues bit for bit.
Saves are atomic (Orbax writes a temporary folder and renames it on commit), so a run killed at
any moment leaves the previous checkpoints intact.

The module functions (:func:`save`, :func:`restore`, :func:`latest_step`, :func:`read_meta`) are
the same mechanism for a finished model (``<workdir>/<category>/checkpoint``), restored without a
target as nested dicts of numpy arrays.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from jad.utils.errors import UserError

BEST_KEY = "criterion"


class Checkpoints:
    """Step-numbered checkpoints under ``directory``.

    Args:
      keep: how many of the latest checkpoints to keep.
      best_mode: ``"min"`` / ``"max"`` to also keep the checkpoint with the best
        ``metrics["criterion"]`` (saves without metrics never count as best); None = latest only.
      create: create ``directory`` if missing (False for read-only use).
      this_process_only: in a multi-host run, read or write without the other processes (a
        finished model of host numpy arrays, written by process 0 and read by every process);
        training checkpoints of global arrays are saved by all processes together.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        keep: int = 2,
        best_mode: str | None = None,
        create: bool = True,
        async_save: bool = True,
        this_process_only: bool = False,
    ):
        self.directory = Path(directory).absolute()
        policies: list[Any] = [pp.LatestN(n=max(1, int(keep)))]
        if best_mode is not None:
            if best_mode not in ("min", "max"):
                raise ValueError(f"best_mode must be 'min', 'max' or None, got {best_mode!r}")
            policies.append(
                pp.BestN(
                    get_metric_fn=lambda m: float(m[BEST_KEY]),
                    reverse=best_mode == "min",
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        self.best_mode = best_mode
        extra = {}
        if this_process_only:
            import jax

            if jax.process_count() > 1:
                me = jax.process_index()
                extra["multiprocessing_options"] = ocp.options.MultiprocessingOptions(
                    primary_host=me, active_processes={me}
                )
                if create:  # Orbax refuses create=True with active_processes: do it here
                    self.directory.mkdir(parents=True, exist_ok=True)
                    create = False
        options = ocp.CheckpointManagerOptions(
            create=create,
            preservation_policy=pp.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
            **extra,
        )
        self._mgr = ocp.CheckpointManager(self.directory, options=options)

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._mgr.wait_until_finished()
        self._mgr.close()

    def wait(self) -> None:
        self._mgr.wait_until_finished()

    def save(
        self,
        step: int,
        state: Any,
        meta: dict[str, Any] | None = None,
        *,
        criterion: float | None = None,
    ) -> None:
        """Saves ``state`` (+ ``meta``) as ``step``; ``criterion`` feeds the best-checkpoint policy."""
        metrics = None if criterion is None else {BEST_KEY: float(criterion)}
        self._mgr.save(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(dict(meta or {}))
            ),
            metrics=metrics,
            force=True,
        )

    def latest_step(self) -> int | None:
        return self._mgr.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._mgr.all_steps())

    def restore(self, step: int | None = None, target: Any = None) -> tuple[Any, dict[str, Any]]:
        """(state, meta) of ``step`` (default: latest); ``target`` gives structure, dtypes and
        shardings (e.g. ``jax.eval_shape`` of the state with shardings attached)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise UserError(f"no checkpoint found in {self.directory}")
        try:
            out = self._mgr.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
                ),
            )
        except Exception as e:  # noqa: BLE001 - a damaged checkpoint is a user-facing problem
            logging.debug("restore failed", exc_info=True)
            raise UserError(
                f"checkpoint {self.directory / str(step)} could not be read "
                f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})"
            ) from e
        return out["state"], dict(out["meta"])

    def read_meta(self, step: int | None = None) -> dict[str, Any]:
        """Only the JSON ``meta`` of ``step`` (default: latest); no arrays are read."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise UserError(f"no checkpoint found in {self.directory}")
        try:
            out = self._mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        except Exception as e:  # noqa: BLE001
            raise UserError(
                f"checkpoint metadata in {self.directory / str(step)} could not be read "
                f"({type(e).__name__}: {e})"
            ) from e
        return dict(out["meta"])


# ---------------------------------------------------------------------------------------------
# A finished model: the same mechanism, one step, no target.
# ---------------------------------------------------------------------------------------------


def save(directory: Path, state: dict[str, Any], meta: dict[str, Any], *, step: int = 0) -> Path:
    """Write ``state`` + ``meta`` as checkpoint ``step`` under ``directory``; returns its path."""
    with Checkpoints(directory, keep=1, async_save=False, this_process_only=True) as ck:
        ck.save(step, state, meta)
    return Path(directory) / str(step)


def latest_step(directory: Path) -> int | None:
    directory = Path(directory)
    if not directory.is_dir():
        return None
    with Checkpoints(directory, create=False, this_process_only=True) as ck:
        return ck.latest_step()


def read_meta(directory: Path, *, step: int | None = None) -> dict[str, Any]:
    """Only the JSON ``meta`` of checkpoint ``step`` (default: the latest); no arrays are read."""
    if latest_step(directory) is None:
        raise UserError(f"no checkpoint found in {directory}")
    with Checkpoints(directory, create=False, this_process_only=True) as ck:
        return ck.read_meta(step)


def restore(directory: Path, *, step: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, meta) of checkpoint ``step`` (default: the latest) under ``directory``."""
    if latest_step(directory) is None:
        raise UserError(
            f"no checkpoint found in {directory} (run jad.train with this --workdir first)"
        )
    with Checkpoints(directory, create=False, this_process_only=True) as ck:
        state, meta = ck.restore(step)
    return dict(state), meta
