"""Convert torchvision / timm ResNet-50 or Wide-ResNet-50-2 weights to a jad (Flax/Orbax) folder.

    python -m jad.convert --src wide_resnet50_2-95faca4d.pth --out $JAD_WEIGHTS_DIR/wide_resnet50_2
    python -m jad.convert --src model.safetensors --out weights/wrn50 --arch wide_resnet50_2 --keep-fc

``.pth`` needs torch (``pip install 'jad[torch]'``); ``.safetensors`` does not. The architecture is
inferred from the shapes when ``--arch`` is not given. Errors are one line and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from jad.models.convert import ARCH_WIDTH, convert_file


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jad.convert", description=__doc__.split("\n\n")[0].strip()
    )
    p.add_argument("--src", required=True, help="torchvision .pth or timm .safetensors file")
    p.add_argument("--out", required=True, help="output folder (variables/ + metadata.json)")
    p.add_argument("--arch", choices=sorted(ARCH_WIDTH), default=None,
                   help="architecture (default: inferred from the shapes)")  # fmt: skip
    p.add_argument("--keep-fc", action="store_true", help="keep the 1000-class fc layer")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 1 conversion error, 2 usage error)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        meta = convert_file(args.src, args.out, arch=args.arch, keep_fc=args.keep_fc)
    except (ValueError, OSError) as e:
        print(f"jad.convert: error: {e}", file=sys.stderr)
        return 1
    summary = {k: meta[k] for k in ("arch", "keys_converted", "fc_kept", "weights_guess", "sha256")}
    print(f"wrote {args.out} {json.dumps(summary)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
