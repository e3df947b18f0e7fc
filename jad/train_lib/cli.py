"""absl + ml_collections plumbing shared by ``jad.train``, ``jad.evaluate`` and ``jad.predict``.

ml_collections' config flags die with a traceback on an unknown key (``--config.zzz=3`` raises
AttributeError deep in flag parsing); these helpers turn that and every other user mistake into
one line on stderr and exit status 2.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, Sequence

from absl import app, flags

from jad.utils.errors import user_error_types

_OVERRIDE = re.compile(r"^--?config\.([A-Za-z0-9_.]+)(=.*)?$")

# Multi-host (jad.utils.distributed): every CLI takes these; unset = the JAX_* environment, else
# a single process.
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0's coordinator (multi-host runs)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-host run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in [0, num).")


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` on stderr and exit with ``code``."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _config_file_from_argv(argv: Sequence[str]) -> str | None:
    for i, a in enumerate(argv):
        if a.startswith("--config="):
            return a.split("=", 1)[1]
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _with_config_file(argv: list[str], resolved: str) -> list[str]:
    """``argv`` with its ``--config`` value replaced by ``resolved``."""
    out = list(argv)
    for i, a in enumerate(out):
        if a.startswith("--config="):
            out[i] = f"--config={resolved}"
            break
        if a == "--config" and i + 1 < len(out):
            out[i + 1] = resolved
            break
    return out


def unknown_key_message(argv: Sequence[str], config_path: str | None) -> str | None:
    """Find the first ``--config.a.b`` override whose key the config file does not define."""
    if not config_path:
        return None
    try:
        from ml_collections import config_flags

        path, _, arg = config_path.partition(":")
        cfg = config_flags.config_flags._LoadConfigModule("config", path).get_config(
            *([arg] if arg else [])
        )
    except Exception:  # noqa: BLE001 - only used to improve the message
        return None
    for a in argv:
        m = _OVERRIDE.match(a)
        if not m:
            continue
        node = cfg
        parts = m.group(1).split(".")
        for depth, part in enumerate(parts):
            keys = list(node.keys()) if hasattr(node, "keys") else []
            if part not in keys:
                where = ".".join(parts[:depth]) or "the top level"
                return (
                    f"unknown config key '{m.group(1)}' in {os.path.basename(path)}; "
                    f"keys at {where}: {', '.join(sorted(keys))}"
                )
            node = node[part]
    return None


def make_flags_parser(*, needs_config: bool) -> Callable[[list[str]], list[str]]:
    """absl ``flags_parser`` that reports bad flags/configs in one line (exit 2)."""

    def parse(argv: list[str]) -> list[str]:
        config_path = _config_file_from_argv(argv)
        if needs_config:
            from jad import config_files
            from jad.utils.errors import UserError

            if config_path is None:
                fail(
                    "missing --config=<method>_<dataset> or --config=path/to/config.py (see README)"
                )
            try:
                config_path = config_files.resolve(config_path)
            except UserError as e:
                fail(str(e))
            argv = _with_config_file(argv, config_path)
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:
            # a config file that raises while it is built: ml_collections puts the traceback in
            # the flag error's text; its first line and the exception's (last) line are the fix
            lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
            fail(lines[0] if len(lines) == 1 else f"{lines[0]} {lines[-1]}")
        except (AttributeError, KeyError) as e:
            msg = unknown_key_message(argv, config_path)
            fail(msg or f"bad --config override: {e}")
        except Exception as e:  # noqa: BLE001 - config files are user code
            fail(f"could not load config '{config_path}': {type(e).__name__}: {e}")
        return argv  # unreachable

    return parse


def run(main: Callable[[list[str]], int | None], *, needs_config: bool) -> None:
    """``absl.app.run`` with one-line user errors and quiet third-party logging."""

    def wrapped(argv: list[str]) -> None:
        from absl import logging as absl_logging

        # Orbax and friends log every save step through absl at INFO; keep the console readable.
        absl_logging.set_verbosity(absl_logging.WARNING)
        for noisy in ("orbax", "jax._src", "tensorflow_datasets", "grain"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        from jad.utils import distributed

        try:
            if (
                distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
                and not distributed.is_primary()
            ):
                # one console: tables, summaries and progress from process 0; the others keep
                # stderr (warnings, errors) and write nothing else
                # (file descriptor 1 itself: gloo's C++ side prints there too)
                sys.stdout.flush()
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, 1)
                os.close(null)
            code = main(argv)
        except SystemExit:
            raise
        except user_error_types() as e:
            message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if distributed.joined():
                print(f"error: {message}", file=sys.stderr)
                distributed.exit_now(2)
            fail(message)
        except BaseException as e:
            if not distributed.joined():
                raise
            # Multi-process: leave at once (no shutdown barrier, no background saves), so the
            # other processes see this one gone within the heartbeat timeout instead of hanging.
            if distributed.lost_peer(e):
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                print(
                    "error: lost contact with another process of this run (it died or was "
                    f"stopped; see its log): {first}",
                    file=sys.stderr,
                )
            else:
                import traceback

                traceback.print_exc()
            distributed.exit_now(1)
        sys.exit(int(code or 0))

    app.run(wrapped, flags_parser=make_flags_parser(needs_config=needs_config))
