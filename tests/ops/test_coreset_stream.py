"""The streaming coreset (rows on disk) picks exactly what the in-memory kernel picks."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jad import ops
from jad.ops.coreset import greedy_coreset_stream
from jad.utils.rowfile import RowFile


def _store(tmp_path, x):
    path = tmp_path / "rows.npy"
    np.save(path, x)
    return RowFile.open_npy(path)


@pytest.mark.parametrize(
    "n,d,block,num",
    [
        (700, 64, 256, 60),  # N < _PROJ_BLOCK (zero-padded projection), 3 blocks
        (5000, 160, 1024, 120),  # shifted-back last projection chunk, ragged last block
        (3000, 128, 4096, 50),  # D == projection_dim: no projection, one block
    ],
)
def test_stream_matches_in_memory(tmp_path, n, d, block, num):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, d), dtype=np.float32)
    x[17] = x[3]  # duplicate rows: ties must resolve to the same (lowest) index
    key = jax.random.key(1)
    want, want_r = ops.greedy_coreset(x, num=num, key=key, return_radii=True)
    got, got_r = greedy_coreset_stream(
        _store(tmp_path, x), num=num, key=key, block=block, tmp_dir=tmp_path, return_radii=True
    )
    np.testing.assert_array_equal(got, np.asarray(want))
    np.testing.assert_array_equal(got_r, np.asarray(want_r))
    assert not list(tmp_path.glob(".coreset-*"))  # the projected store is removed


def test_stream_in_memory_rows_and_progress(tmp_path):
    x = np.random.default_rng(0).standard_normal((1500, 32), dtype=np.float32)
    key = jax.random.key(2)
    seen = []
    got = greedy_coreset_stream(x, ratio=0.05, key=key, block=512, progress=seen.append)
    np.testing.assert_array_equal(got, np.asarray(ops.greedy_coreset(x, ratio=0.05, key=key)))
    assert seen[-1] == 75 and seen == sorted(seen)


def test_rowfile_take_and_reshape(tmp_path):
    x = np.arange(6 * 4 * 3, dtype=np.float32).reshape(6, 4, 3)
    rf = _store(tmp_path, x).reshape_rows(3)
    assert rf.shape == (24, 3)
    idx = np.array([23, 0, 5, 5, 11])
    np.testing.assert_array_equal(rf.take(idx), x.reshape(24, 3)[idx])
    np.testing.assert_array_equal(rf.read(4, 9), x.reshape(24, 3)[4:9])
    with pytest.raises(ValueError, match="key="):
        greedy_coreset_stream(rf, num=2)
