"""Anomaly-detection methods over plain pytrees; see ``jad.methods.common`` for the protocol."""

from jad.methods.common import (
    FitContext,
    FitResult,
    Method,
    Predictions,
    available_methods,
    build_method,
)

__all__ = ["FitContext", "FitResult", "Method", "Predictions", "available_methods", "build_method"]
