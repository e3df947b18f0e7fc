"""Orbax checkpoints of a fitted method: ``<dir>/<step>/{state, meta}``.

``state`` is the method's array pytree, ``meta`` a JSON dict (the run config, the backbone's
provenance, fit info). Saves are atomic (Orbax writes to a temporary directory and renames on
commit), so an interrupted save never replaces a good checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

from jad.utils.errors import UserError


def _manager(directory: Path, *, create: bool) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=create)
    return ocp.CheckpointManager(directory.absolute(), options=options)


def save(directory: Path, state: dict[str, Any], meta: dict[str, Any], *, step: int = 0) -> Path:
    """Write ``state`` + ``meta`` as checkpoint ``step`` under ``directory``; returns its path."""
    mgr = _manager(Path(directory), create=True)
    mgr.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
        force=True,
    )
    mgr.wait_until_finished()
    mgr.close()
    return Path(directory) / str(step)


def latest_step(directory: Path) -> int | None:
    directory = Path(directory)
    if not directory.is_dir():
        return None
    mgr = _manager(directory, create=False)
    step = mgr.latest_step()
    mgr.close()
    return step


def read_meta(directory: Path, *, step: int | None = None) -> dict[str, Any]:
    """Only the JSON ``meta`` of checkpoint ``step`` (default: the latest); no arrays are read."""
    directory = Path(directory)
    step = latest_step(directory) if step is None else step
    if step is None:
        raise UserError(f"no checkpoint found in {directory}")
    mgr = _manager(directory, create=False)
    try:
        out = mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    except Exception as e:  # noqa: BLE001 - a damaged checkpoint is a user-facing problem
        raise UserError(
            f"checkpoint metadata in {directory / str(step)} could not be read "
            f"({type(e).__name__}: {e})"
        ) from e
    finally:
        mgr.close()
    return dict(out["meta"])


def restore(directory: Path, *, step: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, meta) of checkpoint ``step`` (default: the latest) under ``directory``."""
    directory = Path(directory)
    step = latest_step(directory) if step is None else step
    if step is None:
        raise UserError(
            f"no checkpoint found in {directory} (run jad.train with this --workdir first)"
        )
    mgr = _manager(directory, create=False)
    try:
        out = mgr.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()),
        )
    except Exception as e:  # noqa: BLE001 - a damaged checkpoint is a user-facing problem
        logging.debug("restore failed", exc_info=True)
        raise UserError(
            f"checkpoint {directory / str(step)} could not be read ({type(e).__name__}: {e})"
        ) from e
    finally:
        mgr.close()
    return dict(out["state"]), dict(out["meta"])
