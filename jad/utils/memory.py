"""Process memory helpers (Linux / glibc; no-ops elsewhere)."""

from __future__ import annotations

import ctypes
import functools


@functools.cache
def _libc():
    try:
        lib = ctypes.CDLL("libc.so.6")
        lib.malloc_trim  # noqa: B018 - glibc only
        return lib
    except (OSError, AttributeError):
        return None


def trim_heap() -> None:
    """glibc ``malloc_trim(0)``: hand the free pages of every malloc arena back to the kernel.

    XLA's worker threads allocate from per-thread arenas that glibc does not shrink on its own,
    so memory freed after a burst of work (e.g. the streaming coreset's projection pass) stays
    resident: measured 14-22 MiB at 250 k rows on this machine, returned by one call.
    """
    lib = _libc()
    if lib is not None:
        lib.malloc_trim(0)
