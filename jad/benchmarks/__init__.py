"""Benchmark implementations behind ``python -m jad.benchmark``."""
