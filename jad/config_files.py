"""Find a config file by path or by name (``--config=pbas_mvtec`` = ``configs/pbas_mvtec.py``).

The shipped configs are one folder, ``configs/`` at the top of the repository. A wheel carries
the same files as the package ``jad.configs`` (``pyproject.toml`` maps the folder into the
package; nothing is copied in the source tree). In a checkout, the checkout's ``configs/`` is
used, so a clone never picks up another installation's copy.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from jad.utils.errors import UserError

# The prefixes a name may carry: the README's ``configs/x.py`` works from any directory once jad
# is installed, and ``jad/configs/x.py`` names the installed copy.
_PREFIXES = ((), ("configs",), ("jad", "configs"))


def shipped_dir() -> Path | None:
    """The folder of the shipped configs: the checkout's ``configs/``, else ``jad/configs``."""
    package = Path(importlib.util.find_spec("jad").origin).resolve().parent
    checkout = package.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "configs").is_dir():
        return checkout / "configs"
    spec = importlib.util.find_spec("jad.configs")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return None


def available() -> list[str]:
    """The shipped config names (file stems), sorted."""
    d = shipped_dir()
    if d is None:
        return []
    return sorted(p.stem for p in d.glob("*.py") if not p.stem.startswith("_"))


def resolve(spec: str) -> str:
    """``path[:arg]`` or ``name[:arg]`` -> ``path[:arg]`` of an existing config file.

    An existing path wins; otherwise ``name``, ``name.py``, ``configs/name.py`` and
    ``jad/configs/name.py`` name a shipped config.

    Raises:
      UserError: neither a file nor a shipped name (the message lists the names).
    """
    file_part, sep, arg = spec.partition(":")
    if os.path.isfile(file_part):
        return spec
    p = Path(file_part)
    name = p.stem if p.suffix == ".py" else p.name
    names = available()
    if p.parent.parts in _PREFIXES and name in names:
        return f"{shipped_dir() / (name + '.py')}{sep}{arg}"
    listed = ", ".join(names) if names else "none found (is jad installed?)"
    raise UserError(
        f"config '{file_part}' does not exist; give a config file's path or a shipped name: {listed}"
    )


def load(spec: str, *args: str):
    """``get_config(*args)`` of the config ``spec`` names (see :func:`resolve`)."""
    path = resolve(spec).partition(":")[0]
    module_spec = importlib.util.spec_from_file_location(f"jad_config_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(*args)
