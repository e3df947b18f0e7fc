"""Write the golden synthetic WRN50-2 weights as a torchvision ``.pth`` (jad environment).

Both sides of the anomalib comparison must run the same backbone weights. No pretrained
weights exist here, so we use ``wide_resnet50_2_state_dict(0)`` from
``shared/golden/make_inputs.py``: 320 tensors with exactly the keys, shapes and dtypes of
``torchvision.models.wide_resnet50_2().state_dict()``. The file is ``torch.save`` of a plain
``dict[str, torch.Tensor]`` (float32 / int64), i.e. what a torchvision user would save.

Usage::

    python experiments/anomalib/make_weights.py --out /tmp/jad_cmp/wrn50_seed0.pth
    python -m jad.convert --src /tmp/jad_cmp/wrn50_seed0.pth --out /tmp/jad_cmp/wrn50_jad
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

_REPO = Path(__file__).resolve().parents[2]
DEFAULT_GOLDEN = _REPO.parent / "shared" / "golden"
NUM_KEYS = 320


class WeightsError(ValueError):
    """A user-fixable problem with the arguments (bad path, missing golden folder)."""


def load_make_inputs(golden_dir: Path) -> ModuleType:
    """Import ``make_inputs.py`` from the golden folder without putting it on ``sys.path``."""
    path = Path(golden_dir) / "make_inputs.py"
    if not path.is_file():
        raise WeightsError(
            f"{path} does not exist; pass --golden pointing at the shared/golden folder."
        )
    spec = importlib.util.spec_from_file_location("jad_golden_make_inputs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def golden_state_dict(golden_dir: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """``wide_resnet50_2_state_dict(seed)``: 320 numpy arrays in torchvision key order."""
    sd = load_make_inputs(golden_dir).wide_resnet50_2_state_dict(seed)
    assert len(sd) == NUM_KEYS, f"expected {NUM_KEYS} keys, got {len(sd)}"
    return sd


def verify_checksums(sd: dict[str, np.ndarray], golden_dir: Path) -> float:
    """Compare per-tensor [sum, sum of squares, first] with ``weights_checksums.json``.

    Returns the worst relative difference; raises ``AssertionError`` on a mismatch (only valid
    for seed 0, which is what the checksums were written for).
    """
    ref = json.loads((Path(golden_dir) / "weights_checksums.json").read_text())
    worst = 0.0
    for key, arr in sd.items():
        s, ss, first = ref[key]
        a = np.asarray(arr, dtype=np.float64).ravel()
        got_first = float(a[0]) if a.size else 0.0
        assert got_first == first, f"{key}: first element {got_first} != {first}"
        worst = max(
            worst,
            abs(float(a.sum()) - s) / (1 + abs(s)),
            abs(float((a * a).sum()) - ss) / (1 + abs(ss)),
        )
    assert worst < 1e-9, f"checksum mismatch, worst relative difference {worst:.2e}"
    return worst


def write_pth(sd: dict[str, np.ndarray], out: Path) -> Path:
    """``torch.save`` the arrays as a ``dict[str, torch.Tensor]`` (0-d int64 stays 0-d)."""
    import torch

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # np.array, not np.ascontiguousarray: the latter turns the 0-d num_batches_tracked into [1].
    tensors = {k: torch.from_numpy(np.array(v, order="C")) for k, v in sd.items()}
    torch.save(tensors, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output .pth file")
    parser.add_argument("--golden", type=Path, default=DEFAULT_GOLDEN, help="shared/golden folder")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (checksums exist for 0)")
    args = parser.parse_args(argv)
    try:
        if args.out.suffix not in (".pth", ".pt"):
            raise WeightsError(f"--out {args.out} should end in .pth (a torch.save file).")
        sd = golden_state_dict(args.golden, args.seed)
        note = ""
        if args.seed == 0:
            note = f", checksums ok (worst rel {verify_checksums(sd, args.golden):.1e})"
        path = write_pth(sd, args.out)
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({len(sd)} tensors, {path.stat().st_size / 2**20:.1f} MiB{note})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
