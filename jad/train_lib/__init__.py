"""Shared machinery of the entry points: config flags, progress, checkpoints, the fit/evaluate loop."""
