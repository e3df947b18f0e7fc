"""torchvision / timm ResNet-50 and Wide-ResNet-50-2 weights -> Flax variables (Orbax checkpoint).

The mapping is a table generated from the architecture (``torch_layout``): every torch key has one
Flax destination (``params`` or ``batch_stats``) and a transform:

=========================================  =========================================  ==========
torch key                                  Flax path                                  transform
=========================================  =========================================  ==========
``conv1.weight`` [O, I, kh, kw]            ``params/conv1/kernel`` [kh, kw, I, O]     OIHW->HWIO
``layer1.0.bn1.weight`` / ``.bias``        ``params/layer1_0/bn1/scale`` / ``bias``   -
``layer1.0.downsample.1.running_mean``     ``batch_stats/layer1_0/downsample_1/mean``  -
``...running_var``                         ``batch_stats/.../var``                    -
``fc.weight`` [out, in] / ``fc.bias``      ``params/fc/kernel`` [in, out] / ``bias``  transpose
``*.num_batches_tracked``                  dropped (momentum BN does not use it)      -
=========================================  =========================================  ==========

Output folder layout (written atomically: a temporary sibling folder is renamed into place, an
existing good output is only replaced after the new one is complete)::

    <out>/variables/      Orbax (StandardCheckpointer) tree {"params": ..., "batch_stats": ...}
    <out>/metadata.json   provenance: source file name, sha256, arch, key counts, fc kept, guess
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jad.models.wide_resnet import BLOCKS, EXPANSION, PLANES
from jad.utils.atomic import atomic_dir, write_json
from jad.utils.errors import UserError

ARCH_WIDTH = {"wide_resnet50_2": 128, "resnet50": 64}
METADATA_FORMAT = "jad-backbone-v1"
FORMAT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


class ConversionError(UserError, ValueError):
    """A weights file that cannot be converted (unreadable, wrong architecture, bad keys)."""


# Published checkpoint file names embed the first 8 hex digits of the file's SHA-256 (torch.hub's
# ``filename-<sha256 prefix>.ext`` convention, checked by ``load_state_dict_from_url(check_hash=True)``).
# Names from torchvision's weight enums (download.pytorch.org/models/...) and timm's v0.1 release.
KNOWN_WEIGHTS: tuple[tuple[str, str, str, str], ...] = (
    # (sha256 prefix, arch, version tag, description)
    ("95faca4d", "wide_resnet50_2", "tv_v1",
     "torchvision Wide_ResNet50_2 IMAGENET1K_V1 (wide_resnet50_2-95faca4d.pth) = timm wide_resnet50_2.tv_in1k"),
    ("9ba9bcbe", "wide_resnet50_2", "tv_v2",
     "torchvision Wide_ResNet50_2 IMAGENET1K_V2 (wide_resnet50_2-9ba9bcbe.pth) = timm wide_resnet50_2.tv2_in1k"),
    ("8234f177", "wide_resnet50_2", "timm_racm",
     "timm wide_resnet50_2.racm_in1k (wide_resnet50_racm-8234f177.pth)"),
    ("0676ba61", "resnet50", "tv_v1", "torchvision ResNet50 IMAGENET1K_V1 (resnet50-0676ba61.pth)"),
    ("11ad3fa6", "resnet50", "tv_v2", "torchvision ResNet50 IMAGENET1K_V2 (resnet50-11ad3fa6.pth)"),
)  # fmt: skip

# Fallback when the hash is unknown (renamed / re-saved files): hints in the file name.
_NAME_HINTS: tuple[tuple[str, str], ...] = (
    (r"95faca4d|tv_in1k|imagenet1k_v1", "tv_v1"),
    (r"9ba9bcbe|11ad3fa6|tv2_in1k|imagenet1k_v2|(?:^|[^a-z0-9])v2(?:[^a-z0-9]|$)", "tv_v2"),
    (r"racm", "timm_racm"),
)
_TAG_TEXT = {
    "tv_v1": "torchvision IMAGENET1K_V1",
    "tv_v2": "torchvision IMAGENET1K_V2",
    "timm_racm": "timm racm_in1k",
}


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------
def torch_layout(arch: str, *, fc: bool = True) -> dict[str, tuple[tuple[int, ...], str]]:
    """torch key -> (shape, kind) in torchvision ``state_dict()`` order.

    kind is one of ``conv``, ``bn_weight``, ``bn_bias``, ``bn_mean``, ``bn_var``, ``bn_count``,
    ``fc_weight``, ``fc_bias``. WRN-50-2 with fc: 320 keys (53 of them ``num_batches_tracked``).
    """
    if arch not in ARCH_WIDTH:
        raise ConversionError(f"unknown arch {arch!r}; choose one of {sorted(ARCH_WIDTH)}.")
    wpg = ARCH_WIDTH[arch]
    out: dict[str, tuple[tuple[int, ...], str]] = {}

    def bn(prefix: str, c: int) -> None:
        out[f"{prefix}.weight"] = ((c,), "bn_weight")
        out[f"{prefix}.bias"] = ((c,), "bn_bias")
        out[f"{prefix}.running_mean"] = ((c,), "bn_mean")
        out[f"{prefix}.running_var"] = ((c,), "bn_var")
        out[f"{prefix}.num_batches_tracked"] = ((), "bn_count")

    out["conv1.weight"] = ((64, 3, 7, 7), "conv")
    bn("bn1", 64)
    cin = 64
    for li, (nblocks, planes) in enumerate(zip(BLOCKS, PLANES, strict=True)):
        width = planes * wpg // 64
        cout = planes * EXPANSION
        for b in range(nblocks):
            p = f"layer{li + 1}.{b}"
            out[f"{p}.conv1.weight"] = ((width, cin, 1, 1), "conv")
            bn(f"{p}.bn1", width)
            out[f"{p}.conv2.weight"] = ((width, width, 3, 3), "conv")
            bn(f"{p}.bn2", width)
            out[f"{p}.conv3.weight"] = ((cout, width, 1, 1), "conv")
            bn(f"{p}.bn3", cout)
            if b == 0:
                out[f"{p}.downsample.0.weight"] = ((cout, cin, 1, 1), "conv")
                bn(f"{p}.downsample.1", cout)
            cin = cout
    if fc:
        out["fc.weight"] = ((1000, cin), "fc_weight")
        out["fc.bias"] = ((1000,), "fc_bias")
    return out


_LEAF = {
    "conv": ("params", "kernel"),
    "bn_weight": ("params", "scale"),
    "bn_bias": ("params", "bias"),
    "bn_mean": ("batch_stats", "mean"),
    "bn_var": ("batch_stats", "var"),
    "fc_weight": ("params", "kernel"),
    "fc_bias": ("params", "bias"),
}


def flax_path(torch_key: str, kind: str) -> tuple[str, ...]:
    """``layer1.0.downsample.1.running_var`` -> ``("batch_stats", "layer1_0", "downsample_1", "var")``."""
    parts = torch_key.split(".")[:-1]
    mods: list[str] = []
    i = 0
    while i < len(parts):
        if i + 1 < len(parts) and parts[i + 1].isdigit():
            mods.append(f"{parts[i]}_{parts[i + 1]}")
            i += 2
        else:
            mods.append(parts[i])
            i += 1
    collection, leaf = _LEAF[kind]
    return (collection, *mods, leaf)


def _to_flax(value: np.ndarray, kind: str) -> np.ndarray:
    value = np.asarray(value, dtype=np.float32)
    if kind == "conv":
        return np.ascontiguousarray(value.transpose(2, 3, 1, 0))
    if kind == "fc_weight":
        return np.ascontiguousarray(value.T)
    return value


def _to_torch(value: np.ndarray, kind: str) -> np.ndarray:
    value = np.asarray(value, dtype=np.float32)
    if kind == "conv":
        return np.ascontiguousarray(value.transpose(3, 2, 0, 1))
    if kind == "fc_weight":
        return np.ascontiguousarray(value.T)
    return value


def infer_arch(state_dict: Mapping[str, Any]) -> str:
    """``wide_resnet50_2`` or ``resnet50`` from the shape of ``layer1.0.conv1.weight``."""
    key = "layer1.0.conv1.weight"
    if key not in state_dict:
        raise ConversionError(
            f"not a torchvision ResNet-50 / Wide-ResNet-50-2 state dict: key {key!r} is missing "
            f"(first keys: {_few(state_dict)}); pass a torchvision or timm checkpoint."
        )
    shape = tuple(np.shape(state_dict[key]))
    for arch, wpg in ARCH_WIDTH.items():
        if shape == (wpg, 64, 1, 1):
            return arch
    raise ConversionError(
        f"not a ResNet-50 / Wide-ResNet-50-2 state dict: {key} has shape {list(shape)} "
        f"(expected [128, 64, 1, 1] for wide_resnet50_2 or [64, 64, 1, 1] for resnet50)."
    )


def _few(keys: Any, n: int = 5) -> str:
    keys = list(keys)
    more = f", ... ({len(keys)} in all)" if len(keys) > n else ""
    return ", ".join(repr(k) for k in keys[:n]) + more


def torch_to_flax(
    state_dict: Mapping[str, Any], arch: str | None = None, *, keep_fc: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Converts a torch-named state dict (numpy/torch arrays) to Flax variables.

    Args:
      state_dict: torchvision key -> array (``module.`` prefixes already stripped).
      arch: ``wide_resnet50_2`` / ``resnet50``; inferred from the shapes when None.
      keep_fc: keep the 1000-class ``fc`` layer (needs ``fc.*`` in the file).

    Returns:
      (variables, report): variables ``{"params": ..., "batch_stats": ...}`` of float32 numpy
      arrays; report with ``arch``, ``keys_in_file``, ``keys_converted``, ``keys_dropped``.

    Raises:
      ConversionError: wrong architecture, missing / unexpected / mis-shaped keys.
    """
    inferred = infer_arch(state_dict)
    if arch is None:
        arch = inferred
    elif arch not in ARCH_WIDTH:
        raise ConversionError(f"unknown arch {arch!r}; choose one of {sorted(ARCH_WIDTH)}.")
    elif arch != inferred:
        shape = list(np.shape(state_dict["layer1.0.conv1.weight"]))
        raise ConversionError(
            f"the file holds {inferred} weights (layer1.0.conv1.weight is {shape}) but arch is "
            f"{arch}; pass --arch {inferred} (or the matching weights file)."
        )
    layout = torch_layout(arch, fc=True)
    given = set(state_dict)
    missing = [
        k for k, (_, kind) in layout.items() if k not in given and kind != "bn_count" and
        (keep_fc or not k.startswith("fc."))
    ]  # fmt: skip
    unexpected = [k for k in state_dict if k not in layout]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_few(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_few(unexpected)}")
        hint = " (use keep_fc=False / drop --keep-fc)" if keep_fc and "fc.weight" in missing else ""
        raise ConversionError(
            f"state dict does not match torchvision {arch}: {'; '.join(parts)}{hint}."
        )
    bad = []
    for k in state_dict:
        want = layout[k][0]
        got = tuple(np.shape(state_dict[k]))
        if got != want and not (layout[k][1] == "bn_count" and np.size(state_dict[k]) == 1):
            bad.append(f"{k} is {list(got)}, expected {list(want)}")
    if bad:
        raise ConversionError(
            f"{len(bad)} mis-shaped key(s) for {arch}: {'; '.join(bad[:3])}"
            f"{' ...' if len(bad) > 3 else ''}."
        )
    variables: dict[str, Any] = {"params": {}, "batch_stats": {}}
    dropped = []
    for k, (_, kind) in layout.items():
        if k not in state_dict:
            continue
        if kind == "bn_count" or (k.startswith("fc.") and not keep_fc):
            dropped.append(k)
            continue
        node = variables
        path = flax_path(k, kind)
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = _to_flax(_as_numpy(state_dict[k]), kind)
    report = {
        "arch": arch,
        "keys_in_file": len(state_dict),
        "keys_converted": len(state_dict) - len(dropped),
        "keys_dropped": len(dropped),
        "fc_kept": bool(keep_fc),
    }
    return variables, report


def flax_to_torch(variables: Mapping[str, Any], arch: str) -> dict[str, np.ndarray]:
    """Inverse of ``torch_to_flax``: Flax variables -> torchvision-named float32 numpy dict.

    ``num_batches_tracked`` is written as int64 0; ``fc.*`` only if ``params/fc`` exists.
    """
    has_fc = "fc" in variables["params"]
    out: dict[str, np.ndarray] = {}
    for k, (_, kind) in torch_layout(arch, fc=has_fc).items():
        if kind == "bn_count":
            out[k] = np.zeros((), np.int64)
            continue
        node = variables
        for p in flax_path(k, kind):
            node = node[p]
        out[k] = _to_torch(np.asarray(node), kind)
    return out


# ---------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------
def _as_numpy(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):  # torch tensor (bf16/fp16 -> fp32 first: numpy has no bf16)
        v = v.detach().cpu()
        if v.is_floating_point():
            v = v.float()
        return v.numpy()
    return np.asarray(v)


def _sniff(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:2] == b"PK" or head[:1] == b"\x80":
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    return "unknown"


MOCO_PREFIXES = ("module.base_encoder.", "base_encoder.")


def select_base_encoder(sd: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A MoCo v3 checkpoint's ResNet (``module.base_encoder.*``), its projection MLP (``fc.*``)
    dropped; the momentum encoder and predictor are ignored. Other state dicts pass unchanged.

    Returns (state dict, facts for the metadata or None when the file is not MoCo-style).
    """
    for prefix in MOCO_PREFIXES:
        if any(k.startswith(prefix) for k in sd):
            enc = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
            head = sorted(k for k in enc if k.startswith("fc."))
            for k in head:
                del enc[k]
            return enc, {
                "layout": "moco_v3",
                "encoder_prefix": prefix,
                "projection_keys_dropped": len(head),
                "other_keys_ignored": len(sd) - len(enc) - len(head),
            }
    return dict(sd), None


def read_state_dict(path: str | os.PathLike, *, with_layout: bool = False):
    """Reads a torchvision/timm state dict from ``.pth``/``.pt``/``.bin``/``.pth.tar`` (torch) or
    ``.safetensors``.

    A checkpoint dict wrapping the weights under ``"state_dict"`` or ``"model"`` is unwrapped, a
    MoCo v3 checkpoint is reduced to its base encoder (:func:`select_base_encoder`) and a
    ``module.`` prefix (DataParallel) is stripped. Values stay torch tensors / numpy arrays.
    With ``with_layout`` also returns the MoCo facts (or None).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist; check the --src path.")
    kind = "safetensors" if path.suffix == ".safetensors" else _sniff(path)
    if path.suffix in (".pth", ".pt", ".bin"):
        kind = "torch"
    if kind == "unknown":
        raise ConversionError(
            f"{path} is neither a PyTorch checkpoint nor a .safetensors file; pass a torchvision "
            f".pth or a timm .safetensors file."
        )
    if kind == "safetensors":
        from safetensors.numpy import load_file

        try:
            sd: Any = load_file(str(path))
        except Exception as e:  # SafetensorError, header errors, dtype errors
            raise ConversionError(
                f"could not read {path} as .safetensors ({_one_line(e)}); the file is truncated "
                f"or corrupt, re-download it."
            ) from e
    else:
        try:
            import torch
        except ImportError as e:
            raise ConversionError(
                f"reading {path.name} needs torch: pip install 'jad[torch]' "
                f"(or convert a .safetensors file, which needs no torch)."
            ) from e
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # zip/unpickling/EOF errors
            raise ConversionError(
                f"could not read {path} as a PyTorch weights file ({_one_line(e)}); the file is "
                f"truncated, corrupt or not a state dict, re-download it."
            ) from e
    if isinstance(sd, Mapping):
        for wrapper in ("state_dict", "model"):
            if wrapper in sd and isinstance(sd[wrapper], Mapping):
                sd = sd[wrapper]
                break
    if not isinstance(sd, Mapping) or not sd:
        raise ConversionError(f"{path} does not contain a state dict (got {type(sd).__name__}).")
    sd, layout = select_base_encoder(sd)
    out = {}
    for k, v in sd.items():
        if not (hasattr(v, "shape") and hasattr(v, "dtype")):
            raise ConversionError(
                f"{path} is not a plain state dict: entry {k!r} is a {type(v).__name__}."
            )
        out[k[len("module.") :] if k.startswith("module.") else k] = v
    return (out, layout) if with_layout else out


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0][:160]}" if msg else type(e).__name__


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def identify_weights(file_name: str, sha256: str) -> dict[str, Any]:
    """Which published checkpoint a file is: by SHA-256 prefix, else by hints in the file name.

    Returns dict with ``weights_guess`` (text or ``"unknown"``), ``basis`` (``sha256`` /
    ``filename`` / ``none``), ``tag`` (``tv_v1``/``tv_v2``/``timm_racm``/None), ``arch`` (from the hash)
    and ``looks_like_torchvision_v2``.
    """
    for prefix, arch, tag, text in KNOWN_WEIGHTS:
        if sha256.lower().startswith(prefix):
            return {"weights_guess": text, "basis": "sha256", "tag": tag, "arch": arch,
                    "looks_like_torchvision_v2": tag == "tv_v2"}  # fmt: skip
    low = file_name.lower()
    for pattern, tag in _NAME_HINTS:
        if re.search(pattern, low):
            return {"weights_guess": f"{_TAG_TEXT[tag]} (from the file name only; hash unknown)",
                    "basis": "filename", "tag": tag, "arch": None,
                    "looks_like_torchvision_v2": tag == "tv_v2"}  # fmt: skip
    return {"weights_guess": "unknown", "basis": "none", "tag": None, "arch": None,
            "looks_like_torchvision_v2": False}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Writing the output folder
# ---------------------------------------------------------------------------------------------
def save_variables(directory: str | os.PathLike, variables: Mapping[str, Any]) -> None:
    """Orbax ``StandardCheckpointer`` save of a (numpy) variables tree into ``directory``."""
    import orbax.checkpoint as ocp

    ckptr = ocp.StandardCheckpointer()
    ckptr.save(Path(directory).absolute(), dict(variables))
    ckptr.wait_until_finished()
    ckptr.close()


def _check_replaceable(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConversionError(f"--out {out} is a file; pass a folder path.")
    if out.is_dir() and any(out.iterdir()) and not (out / "metadata.json").is_file():
        raise ConversionError(
            f"--out {out} exists and is not a jad weights folder (no metadata.json); pass a new "
            f"or empty folder."
        )


def convert_file(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    arch: str | None = None,
    keep_fc: bool = False,
) -> dict[str, Any]:
    """Converts ``src`` (.pth / .safetensors) to ``<out>/variables`` + ``<out>/metadata.json``.

    The new folder is assembled next to ``out`` and renamed into place only when complete; on any
    error an existing ``out`` is left untouched. Returns the metadata dict.
    """
    src, out = Path(src), Path(out)
    _check_replaceable(out)
    sd, layout = read_state_dict(src, with_layout=True)
    if layout is not None and keep_fc:
        raise ConversionError(
            f"{src.name} is a MoCo v3 checkpoint: its fc is a projection MLP, not an ImageNet "
            f"classifier; drop --keep-fc."
        )
    variables, report = torch_to_flax(sd, arch, keep_fc=keep_fc)
    del sd
    sha = file_sha256(src)
    ident = identify_weights(src.name, sha)
    if layout is not None and ident["basis"] == "none":
        ident["weights_guess"] = "MoCo v3 base encoder (from the checkpoint layout; hash unknown)"
    warnings = []
    if ident["arch"] is not None and ident["arch"] != report["arch"]:
        warnings.append(f"hash says {ident['arch']} but the shapes say {report['arch']}")
    if ident["looks_like_torchvision_v2"]:
        warnings.append(
            f"{src.name} looks like torchvision IMAGENET1K_V2 weights ({ident['basis']}); the "
            f"PatchCore/PBAS papers and official code use IMAGENET1K_V1 "
            f"(wide_resnet50_2-95faca4d.pth), so results will not match published numbers."
        )
    for w in warnings:
        logging.warning("jad.convert: %s", w)
    meta = {
        "format": METADATA_FORMAT,
        "source_file": src.name,
        "sha256": sha,
        "arch": report["arch"],
        "keys_in_file": report["keys_in_file"],
        "keys_converted": report["keys_converted"],
        "keys_dropped": report["keys_dropped"],
        "fc_kept": report["fc_kept"],
        "weights_guess": ident["weights_guess"],
        "weights_guess_basis": ident["basis"],
        "looks_like_torchvision_v2": ident["looks_like_torchvision_v2"],
        "source_layout": layout or {"layout": "torchvision"},
        "warnings": warnings,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with atomic_dir(out) as tmp:
        save_variables(tmp / "variables", variables)
        write_json(tmp / "metadata.json", meta)
    return meta
