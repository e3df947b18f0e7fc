"""The one exception type of :mod:`jad.metrics`."""

from __future__ import annotations

from jad.utils.errors import UserError


class MetricError(UserError, ValueError):
    """A metric is undefined for the given input, or the input is malformed.

    Raised for one class only, no defect region, NaN scores, mismatched shapes, bad arguments. The
    message is one sentence naming the problem and the fix, so a CLI can print ``str(err)`` as one
    line and exit non-zero.
    """
