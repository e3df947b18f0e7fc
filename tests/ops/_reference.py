"""Plain numpy transcriptions of the official PatchCore samplers (float32, like torch).

Written from the specification (PatchCore spec §4), used as test oracles only.
"""

import numpy as np


def batchwise_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[Na, Nb] Euclidean distances, official op order: sqrt(clamp((-2ab + aa) + bb, 0))."""
    a = a.astype(np.float32)
    b = b.astype(np.float32)
    aa = np.einsum("ij,ij->i", a, a)[:, None]
    bb = np.einsum("ij,ij->i", b, b)[None, :]
    ab = a @ b.T
    return np.sqrt(np.clip((np.float32(-2.0) * ab + aa) + bb, 0.0, None)).astype(np.float32)


def greedy_loop(z: np.ndarray, delta: np.ndarray, m: int):
    idx, radii = [], []
    delta = delta.astype(np.float32)
    for _ in range(m):
        k = int(np.argmax(delta))  # first index on ties
        idx.append(k)
        radii.append(delta[k])
        delta = np.minimum(delta, batchwise_dist(z, z[k : k + 1])[:, 0])
    return np.array(idx), np.array(radii, np.float32)


def approximate_coreset(x, m, projection=None, starts=None):
    """Official approximate sampler with a given projection [P, D] (or None) and start rows."""
    z = x.astype(np.float32) if projection is None else (x @ projection.T).astype(np.float32)
    delta = batchwise_dist(z, z[np.asarray(starts)]).mean(-1)
    return greedy_loop(z, delta, m)


def exact_coreset(x, m):
    """Official exact sampler (without its projection): delta = L2 norm of distance rows."""
    z = x.astype(np.float32)
    dmat = batchwise_dist(z, z)
    delta = np.sqrt((dmat.astype(np.float64) ** 2).sum(1)).astype(np.float32)
    return greedy_loop(z, delta, m)
