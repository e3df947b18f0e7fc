"""The one exception type of :mod:`jad.data`."""

from __future__ import annotations

from jad.utils.errors import UserError


class DatasetError(UserError, ValueError):
    """A user-side data problem: missing root, wrong layout, unreadable file, bad argument.

    The message is one sentence naming the path or value and what was expected, so that a CLI can
    print ``str(err)`` as a single line and exit non-zero.
    """
