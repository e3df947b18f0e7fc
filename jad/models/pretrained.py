"""Loading the backbone: converted weights (``python -m jad.convert``) or a random Flax init.

Example::

    module, variables = load_backbone("/weights/wrn50")  # a converted folder
    module, variables = load_backbone(None)  # $JAD_WEIGHTS_DIR/wide_resnet50_2
    module, variables = load_backbone("random", seed=0)  # random init (warns loudly)
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jad.models.convert import ARCH_WIDTH, METADATA_FORMAT
from jad.models.wide_resnet import ARCHS, ResNet, init_variables
from jad.utils.errors import UserError

ENV_VAR = "JAD_WEIGHTS_DIR"
_EXAMPLE_SRC = {
    "wide_resnet50_2": "/path/to/wide_resnet50_2-95faca4d.pth",
    "resnet50": "/path/to/resnet50-0676ba61.pth",
}


class WeightsNotFoundError(UserError, FileNotFoundError):
    """No converted weights where they were asked for; the message holds the convert command."""


class WeightsMismatchError(UserError, ValueError):
    """A converted weights folder that does not fit the requested architecture."""


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(ARCHS)}.")


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def parse_dtype(name: str) -> Any:
    """``"float32"`` / ``"bfloat16"`` -> the jnp dtype; anything else is a one-line error."""
    from jad.utils.errors import UserError

    if str(name) not in DTYPES:
        raise UserError(f"backbone.dtype={name!r} is not supported; use one of {', '.join(DTYPES)}")
    return DTYPES[str(name)]


def resolve_weights_dir(path_or_name: str | os.PathLike | None, arch: str) -> Path:
    """Explicit folder path as is; a bare name, or None / "" (-> ``arch``), under ``$JAD_WEIGHTS_DIR``.

    This is the one place that interprets ``backbone.weights`` (``load_backbone`` and
    ``weights_info`` both call it): an empty value never means the current directory. An arch
    without converted weights (``resnet_tiny``) is refused here in one line.
    """
    if arch not in ARCH_WIDTH:  # the archs jad.convert converts
        raise WeightsMismatchError(
            f"arch {arch!r} has no converted weights (random init only): set "
            f"backbone.weights=random, or use one of {', '.join(sorted(ARCH_WIDTH))}"
        )
    if path_or_name is not None and str(path_or_name).strip() == "":
        path_or_name = None
    if path_or_name is not None:
        p = Path(path_or_name)
        if p.is_dir() or len(p.parts) > 1 or p.is_absolute():
            return p
    name = str(path_or_name) if path_or_name is not None else arch
    root = os.environ.get(ENV_VAR)
    if not root:
        raise WeightsNotFoundError(
            f"weights {name!r} is not a folder and ${ENV_VAR} is not set; set {ENV_VAR} or pass "
            f"a folder made by: python -m jad.convert --src {_EXAMPLE_SRC[arch]} "
            f"--out /path/to/weights/{name}"
        )
    return Path(root) / name


def _missing(folder: Path, arch: str, why: str) -> WeightsNotFoundError:
    return WeightsNotFoundError(
        f"no converted {arch} weights at {folder} ({why}); create them with: "
        f"python -m jad.convert --src {_EXAMPLE_SRC[arch]} --out {folder}"
    )


def read_metadata(folder: str | os.PathLike, arch: str = "wide_resnet50_2") -> dict[str, Any]:
    """``<folder>/metadata.json`` of a converted-weights folder."""
    folder = Path(folder)
    meta_path = folder / "metadata.json"
    if not meta_path.is_file() or not (folder / "variables").is_dir():
        what = "folder does not exist" if not folder.exists() else "no metadata.json/variables"
        raise _missing(folder, arch, what)
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise WeightsMismatchError(
            f"{meta_path} is not valid JSON ({e.msg}); re-run python -m jad.convert."
        ) from e
    if meta.get("format") != METADATA_FORMAT:
        raise WeightsMismatchError(
            f"{meta_path} is not a jad weights metadata file (format {meta.get('format')!r}); "
            f"re-run python -m jad.convert."
        )
    return meta


def load_backbone(
    path_or_random: str | os.PathLike | None = "random",
    arch: str = "wide_resnet50_2",
    *,
    seed: int = 0,
    dtype: Any = jnp.float32,
    precision: Any = None,
) -> tuple[ResNet, dict[str, Any]]:
    """Builds the backbone module and its variables.

    Args:
      path_or_random: ``"random"`` (Flax init from ``seed``, announced with a warning); a folder
        written by ``python -m jad.convert``; a bare name or None (-> ``arch``) resolved under
        ``$JAD_WEIGHTS_DIR``.
      arch: ``"wide_resnet50_2"`` or ``"resnet50"``.
      seed: init seed for ``"random"``.
      dtype: computation dtype of the module (float32 / bfloat16); variables are float32.
      precision: ``jax.lax.Precision`` for the convs (None = backend default).

    Returns:
      (module, variables) with variables ``{"params": ..., "batch_stats": ...}`` (float32 jax
      arrays; ``params/fc`` only if the weights kept it).

    Raises:
      WeightsNotFoundError: no converted weights there (message holds the convert command).
      WeightsMismatchError: the folder holds another architecture or broken arrays.
    """
    _check_arch(arch)
    module = ARCHS[arch](dtype=dtype, precision=precision)
    if isinstance(path_or_random, str) and path_or_random == "random":
        logging.warning(
            "jad: using RANDOMLY INITIALISED %s weights (seed %d) - features are meaningless for "
            "anomaly detection; convert real weights with python -m jad.convert",
            arch,
            seed,
        )
        return module, init_variables(module, seed)
    folder = resolve_weights_dir(path_or_random, arch)
    meta = read_metadata(folder, arch)
    if meta.get("arch") != arch:
        raise WeightsMismatchError(
            f"{folder} holds {meta.get('arch')} weights but arch is {arch}; pass "
            f"arch={meta.get('arch')!r} or convert {arch} weights."
        )
    import orbax.checkpoint as ocp

    x = jnp.zeros((1, 32, 32, 3), jnp.float32)
    stages = ("logits",) if meta.get("fc_kept") else ("layer4",)
    target = jax.eval_shape(lambda: module.init(jax.random.key(0), x, stages=stages))
    try:
        restored = ocp.StandardCheckpointer().restore((folder / "variables").absolute(), target)
    except Exception as e:
        raise WeightsMismatchError(
            f"could not restore {folder / 'variables'} ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:160]}); re-run python -m jad.convert."
        ) from e
    bad = [
        f"{jax.tree_util.keystr(k)} {np.shape(v)} != {t.shape}"
        for (k, v), t in zip(
            jax.tree_util.tree_leaves_with_path(restored), jax.tree.leaves(target), strict=True
        )
        if tuple(np.shape(v)) != tuple(t.shape)
    ]
    if bad:
        raise WeightsMismatchError(
            f"{folder} has mis-shaped arrays for {arch}: {'; '.join(bad[:3])}; re-run "
            f"python -m jad.convert."
        )
    return module, jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), restored)


def weights_info(
    path_or_random: str | os.PathLike | None = "random", arch: str = "wide_resnet50_2"
) -> dict[str, Any]:
    """Provenance for results files: source, sha256, arch, random, weights_guess, path."""
    _check_arch(arch)
    if isinstance(path_or_random, str) and path_or_random == "random":
        return {"source": "random", "sha256": None, "arch": arch, "random": True,
                "weights_guess": "random init", "path": None}  # fmt: skip
    folder = resolve_weights_dir(path_or_random, arch)
    meta = read_metadata(folder, arch)
    return {
        "source": meta.get("source_file"),
        "sha256": meta.get("sha256"),
        "arch": meta.get("arch"),
        "random": False,
        "weights_guess": meta.get("weights_guess"),
        "fc_kept": meta.get("fc_kept"),
        "path": str(folder.absolute()),
    }
