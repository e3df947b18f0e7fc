"""User-facing errors: one clear sentence, printed by the CLIs without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix (path, layout, file format, config). The message is the fix."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exception types that the CLIs print as one line and exit non-zero on."""
    types: list[type[BaseException]] = [UserError, FileNotFoundError, NotADirectoryError]
    try:
        from jad.data import DatasetError

        types.append(DatasetError)
    except ImportError:  # pragma: no cover - data package always present in a full install
        pass
    try:
        from jad.models.convert import ConversionError

        types.append(ConversionError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)
