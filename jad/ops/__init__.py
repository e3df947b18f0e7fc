"""Pure-jnp kernels shared by every jad method (importable by any JAX project).

No Flax / optax / TFDS / torch imports here: only jax and numpy.

- distances: :func:`pairwise_sq_dists`, :func:`cosine_similarity`, :func:`sq_norms`
- exact kNN, streamed and sharding-aware: :func:`knn`
- greedy k-center coreset (official PatchCore sampler), sharding-aware: :func:`greedy_coreset`
- anomaly-map filters: :func:`gaussian_blur` (scipy), :func:`resize_bilinear` (torch)
"""

from jad.ops.coreset import coreset_size, greedy_coreset, greedy_coreset_stream
from jad.ops.distances import cosine_similarity, inner_products, pairwise_sq_dists, sq_norms
from jad.ops.filters import (
    bilinear_matrix,
    gaussian_blur,
    gaussian_kernel1d,
    gaussian_matrix,
    resize_bilinear,
    upsample_and_blur,
)
from jad.ops.knn import knn, merge_topk

__all__ = [
    "bilinear_matrix",
    "coreset_size",
    "cosine_similarity",
    "gaussian_blur",
    "gaussian_kernel1d",
    "gaussian_matrix",
    "greedy_coreset",
    "greedy_coreset_stream",
    "inner_products",
    "knn",
    "merge_topk",
    "pairwise_sq_dists",
    "resize_bilinear",
    "sq_norms",
    "upsample_and_blur",
]
