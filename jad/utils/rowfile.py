"""Rows of an on-disk array read with ``pread``: the page cache holds them, not the process.

A NumPy memmap that is read end to end keeps every touched page mapped, so the process's resident
set grows to the file's size even though the pages are reclaimable. ``RowFile`` reads row ranges
into caller-owned buffers instead, so a pass over a file larger than memory costs only the buffer.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class RowFile:
    """A C-ordered array ``shape`` of ``dtype`` stored in ``path`` from byte ``offset`` on.

    Rows are the first axis; ``row_shape`` = ``shape[1:]``. ``reshape_rows(n, ...)`` views the same
    bytes with another row layout (e.g. [images, patches, D] -> [images * patches, D]).
    """

    def __init__(self, path: str | os.PathLike, shape, dtype, offset: int = 0):
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.offset = int(offset)
        self.row_shape = self.shape[1:]
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self._fd: int | None = None  # opened on first read, kept for the hot loops that stream
        need = self.offset + self.shape[0] * self.row_bytes
        size = self.path.stat().st_size
        if size < need:
            raise ValueError(
                f"{self.path} holds {size} bytes; {self.shape} {self.dtype} needs {need}"
            )

    @classmethod
    def open_npy(cls, path: str | os.PathLike) -> RowFile:
        """The array of a ``.npy`` file (C order, as ``np.save`` / ``open_memmap`` write)."""
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            offset = f.tell()
        if fortran:
            raise ValueError(f"{path}: Fortran-ordered arrays are not supported")
        return cls(path, shape, dtype, offset)

    def reshape_rows(self, *row_shape: int) -> RowFile:
        total = int(np.prod(self.shape, dtype=np.int64))
        per = int(np.prod(row_shape, dtype=np.int64))
        if total % per:
            raise ValueError(f"cannot view {self.shape} as rows of {row_shape}")
        return RowFile(self.path, (total // per, *row_shape), self.dtype, self.offset)

    def _fileno(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def close(self) -> None:
        """Closes the file (reopened by the next read)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows [start, stop) into ``out`` (allocated when None); returns the filled view."""
        n = stop - start
        if out is None:
            out = np.empty((n, *self.row_shape), self.dtype)
        view = out[:n]
        if not view.flags.c_contiguous or view.dtype != self.dtype:
            raise ValueError("out must be a C-contiguous buffer of the file's dtype")
        buf = memoryview(view.reshape(-1).view(np.uint8))
        pos, done, want = self.offset + start * self.row_bytes, 0, n * self.row_bytes
        fd = self._fileno()
        while done < want:
            got = os.preadv(fd, [buf[done:]], pos + done)
            if got <= 0:
                raise OSError(f"{self.path}: short read at byte {pos + done}")
            done += got
        return view

    def take(self, indices: np.ndarray) -> np.ndarray:
        """Rows ``indices`` (any order, repeats allowed) -> [len(indices), *row_shape]."""
        idx = np.asarray(indices, np.int64)
        out = np.empty((len(idx), *self.row_shape), self.dtype)
        fd = self._fileno()
        for j in np.argsort(idx, kind="stable"):  # sorted reads: sequential on disk
            b = memoryview(out[j].reshape(-1).view(np.uint8))
            pos = self.offset + int(idx[j]) * self.row_bytes
            if os.preadv(fd, [b], pos) != self.row_bytes:
                raise OSError(f"{self.path}: short read of row {idx[j]}")
        return out
