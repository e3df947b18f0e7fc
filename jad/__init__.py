"""jad: JAX/Flax industrial anomaly detection (PatchCore, PBAS, ProxyCore, APC).

Sub-packages are imported lazily so that ``import jad.ops`` needs only jax and numpy:

- ``jad.ops``      pure jnp kernels (distances, kNN, greedy coreset, filters)
- ``jad.models``   Flax WideResNet50-2 / ResNet-50, weight conversion, patch features
- ``jad.data``     dataset builders, preprocessing, loaders, synthetic data
- ``jad.metrics``  AUROC, AP, F1-max, exact AU-PRO
- ``jad.methods``  PatchCore (and later PBAS, ProxyCore, APC) over plain pytrees
"""

__version__ = "0.1.0"
