"""Anomaly-detection methods over plain pytrees; see ``jad.methods.common`` for the protocols."""

from jad.methods.common import (
    FitContext,
    FitResult,
    Method,
    Predictions,
    TrainData,
    Trainer,
    TrainState,
    available_methods,
    build_method,
    is_trainer,
)

__all__ = [
    "FitContext",
    "FitResult",
    "Method",
    "Predictions",
    "TrainData",
    "TrainState",
    "Trainer",
    "available_methods",
    "build_method",
    "is_trainer",
]
