"""The one root of jad's user-facing errors: one clear sentence, printed by the CLIs without a
traceback.

Every package's error type derives from :class:`UserError` (``DatasetError``, ``ImageError``,
``MetricError``, ``ConversionError``, ``WeightsNotFoundError``, ``WeightsMismatchError``,
``DetectorError``), keeping its standard base too (``ValueError`` / ``FileNotFoundError``) for
callers that catch those. This module imports nothing, so every package (``jad.serving`` and
``jad.imaging`` included, which need only numpy, Pillow and jax) can use it.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix (path, layout, file format, config). The message is the fix."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exception types that the CLIs print as one line and exit non-zero on: the root, and a plain
    missing file or folder (``open()`` of a path the user gave)."""
    return (UserError, FileNotFoundError, NotADirectoryError)
