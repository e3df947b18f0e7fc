"""Smoke run of ``python -m jad.benchmark kernels`` (tiny sizes; prints, asserts no time)."""

import pytest

from jad.benchmarks import kernels


@pytest.mark.slow
def test_kernels_benchmark_smoke(capsys):
    assert kernels.main(["--size", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "stream bandwidth" in out
    assert "knn k=1 bank 2000x64" in out and "idx==numpy 1.0000" in out
    assert "coreset 10% of 3000x256" in out and "floor/jad" in out
